#include "engine/model/perplexity.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/model/cpu_ops.h"

namespace llmc {

std::string NormalizeNewlines(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\r') {
      out.push_back(text[i]);
      continue;
    }
    out.push_back('\n');
    if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
  }
  return out;
}

absl::StatusOr<PerplexityResult> ComputePerplexityWith(const ModelSpec& spec, absl::Span<const int32_t> ids,
                                                       const PerplexityOptions& o,
                                                       const PerplexityPassFn& run_pass) {
  if (o.seq_len < 2)
    return absl::InvalidArgumentError(absl::StrCat("seq_len ", o.seq_len,
                                                   " is too short: a window predicts seq_len - 1 "
                                                   "tokens; use 2 or more"));
  if (o.max_windows < 1)
    return absl::InvalidArgumentError(absl::StrCat("max_windows ", o.max_windows, " must be >= 1"));
  const int64_t available = static_cast<int64_t>(ids.size()) / o.seq_len;
  if (available == 0)
    return absl::InvalidArgumentError(absl::StrCat("the text has ", ids.size(),
                                                   " tokens, fewer than one window of ", o.seq_len,
                                                   "; use a longer text or a smaller seq_len"));
  const double t0 = NowSeconds();
  const int64_t T = o.seq_len;
  PerplexityResult r;
  r.windows = std::min(available, o.max_windows);
  r.tokens = r.windows * T;
  r.predicted_tokens = r.windows * (T - 1);
  r.window_nll_sum.assign(r.windows, 0.0);

  int64_t per_pass = o.windows_per_pass;
  if (per_pass <= 0) {
    const uint64_t window_bytes = static_cast<uint64_t>(T) * spec.hidden_size * sizeof(float);
    per_pass = std::max<int64_t>(1, static_cast<int64_t>(o.max_activation_bytes / window_bytes));
  }
  per_pass = std::min(per_pass, r.windows);
  const int64_t passes = (r.windows + per_pass - 1) / per_pass;
  for (int64_t pass = 0; pass < passes; ++pass) {
    const int64_t w0 = pass * per_pass, nw = std::min(per_pass, r.windows - w0);
    LLMC_RETURN_IF_ERROR(run_pass(pass, passes, ids.subspan(w0 * T, nw * T), nw, r.window_nll_sum.data() + w0));
  }
  double total = 0;
  for (double v : r.window_nll_sum) total += v;
  r.mean_nll = total / static_cast<double>(r.predicted_tokens);
  r.perplexity = std::exp(r.mean_nll);
  r.seconds = NowSeconds() - t0;
  return r;
}

absl::StatusOr<PerplexityResult> ComputePerplexity(const CausalLm& lm, absl::Span<const int32_t> ids,
                                                   const PerplexityOptions& o) {
  const ModelSpec& spec = lm.spec();
  const int64_t T = o.seq_len, V = spec.vocab_size;
  // Logits of the predicting positions (0..T-2 of each window) in chunks of at most ~256 MB.
  const int64_t chunk_rows = std::clamp<int64_t>((int64_t{64} << 20) / V, 1, std::max<int64_t>(1, T - 1));
  std::vector<float> logits;
  std::vector<double> nll;
  auto run_pass = [&](int64_t pass, int64_t passes, absl::Span<const int32_t> pass_ids, int64_t nw,
                      double* nll_sums) -> absl::Status {
    logits.resize(static_cast<size_t>(chunk_rows * V));
    nll.resize(chunk_rows);
    LLMC_ASSIGN_OR_RETURN(HiddenStates x, lm.Embed(pass_ids, nw, T));
    for (int64_t layer = 0; layer < spec.num_layers; ++layer) {
      LLMC_ASSIGN_OR_RETURN(auto block, lm.LoadBlock(static_cast<int>(layer), o.hooks));
      LLMC_RETURN_IF_ERROR(lm.RunBlock(*block, &x, o.hooks));
      if (o.on_progress) o.on_progress(pass, passes, layer, spec.num_layers);
    }
    LLMC_RETURN_IF_ERROR(lm.ApplyFinalNorm(&x));
    LLMC_ASSIGN_OR_RETURN(LinearWeight head, lm.LoadLmHead(o.hooks));
    for (int64_t w = 0; w < nw; ++w) {
      const int32_t* wid = pass_ids.data() + w * T;
      double sum = 0;
      for (int64_t r0 = 0; r0 < T - 1; r0 += chunk_rows) {
        const int64_t n = std::min(chunk_rows, T - 1 - r0);
        LLMC_RETURN_IF_ERROR(lm.Logits(head, x.row(w * T + r0), n, logits.data(), o.hooks));
        lm.context()->ParallelFor(n, 8, [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) nll[t] = TokenNll(logits.data() + t * V, V, wid[r0 + t + 1]);
        });
        for (int64_t t = 0; t < n; ++t) sum += nll[t];
      }
      nll_sums[w] = sum;
    }
    return absl::OkStatus();
  };
  return ComputePerplexityWith(spec, ids, o, run_pass);
}

}  // namespace llmc
