// Perplexity of a causal LM over a token stream, with the protocol of `llmc eval` (docs/DESIGN.md and the
// fixture's reference numbers):
//   cut the ids into non-overlapping windows of seq_len tokens (a trailing partial window is dropped), keep
//   the first max_windows; in each window the model predicts tokens 1..seq_len-1 from the ones before them;
//   perplexity = exp(mean over all predicted tokens of -log softmax(logits)[next token]).
// Logits are fp32, the log-softmax normalizer and all sums fp64.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/model/causal_lm.h"

namespace llmc {

struct PerplexityOptions {
  int64_t seq_len = 512;
  int64_t max_windows = 200;
  // Windows run through the blocks together (each pass loads every block once). 0: as many as fit in
  // max_activation_bytes of hidden states.
  int64_t windows_per_pass = 0;
  uint64_t max_activation_bytes = 2ull << 30;
  LinearHooks* hooks = nullptr;
  // Called after each block of each pass (from the calling thread).
  std::function<void(int64_t pass, int64_t passes, int64_t layer, int64_t layers)> on_progress;
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;                 // natural log, per predicted token
  int64_t windows = 0;                 // windows evaluated
  int64_t tokens = 0;                  // tokens run through the model: windows * seq_len
  int64_t predicted_tokens = 0;        // windows * (seq_len - 1)
  std::vector<double> window_nll_sum;  // per window, the sum of its seq_len - 1 NLLs
  double seconds = 0;                  // wall time of the evaluation (model open and tokenization excluded)
};

// The text as Python's `open(path).read()` returns it (universal newlines: "\r\n" and a lone "\r" become
// "\n"). `llmc eval` tokenizes this, since the reference numbers (fixture_report.json) were made so; it
// matters for files with CRLF line endings such as wikitext2-test.txt.
std::string NormalizeNewlines(absl::string_view text);

// Evaluates `lm` on `ids`. Fails when seq_len < 2, max_windows < 1, or ids hold fewer than seq_len tokens
// (the message says how many there are), or when the model fails (bad token id, missing tensor).
absl::StatusOr<PerplexityResult> ComputePerplexity(const CausalLm& lm, absl::Span<const int32_t> ids,
                                                   const PerplexityOptions& options);

// One pass of the protocol for another device (engine/model/cuda_causal_lm.h): run the `windows` windows whose
// ids are `ids` (windows * seq_len tokens, each window an independent sequence) through the model and store in
// nll_sums[w] the sum over t in [0, seq_len - 1) of -log softmax(logits of token t)[ids[w * seq_len + t + 1]].
using PerplexityPassFn = std::function<absl::Status(int64_t pass, int64_t passes, absl::Span<const int32_t> ids,
                                                    int64_t windows, double* nll_sums)>;

// ComputePerplexity with the model evaluation done by `run_pass`: the same validation, windows, passes (sized by
// options.windows_per_pass / max_activation_bytes of fp32 hidden states of width spec.hidden_size), sums and
// result. ComputePerplexity is this with the CPU pass.
absl::StatusOr<PerplexityResult> ComputePerplexityWith(const ModelSpec& spec, absl::Span<const int32_t> ids,
                                                       const PerplexityOptions& options,
                                                       const PerplexityPassFn& run_pass);

}  // namespace llmc
