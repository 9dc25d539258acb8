// Calibration statistics of one Linear's input: the GPTQ/SparseGPT Hessian H = 2/N sum_t x_t x_t^T and Wanda's
// per-input-channel sum of squares.
//
// llm-compressor (modifiers/quantization/gptq/gptq_quantize.py and pruning/sparsegpt/sgpt_sparsify.py,
// `accumulate_hessian`) keeps H normalized after every batch: H <- H * n/(n+b) + (2/(n+b)) X^T X, where b is the
// batch's size along its *leading* dimension -- the number of calibration samples (sequences), not tokens (its
// comment: "this is the number of dataset samples, not multiplied by the sequence length"); a 2-D input counts as
// one sample. The result is H = 2/N * sum over all tokens of x x^T with N = the number of samples. Wanda
// (pruning/wanda/wanda_sparsify.py, `accumulate_row_scalars`) keeps sum_t x_t[c]^2 / N the same way.
//
// These accumulators keep the raw sums (fp32 X^T X through OpenBLAS SYRK; fp64 for the per-channel sums) and
// the counts, and normalize only when the statistic is read. That gives the library's value up to float rounding,
// while the result does not depend on how tokens were split into Add calls, chunks or ranks beyond the order of
// the fp32 additions (the running rescale would add a rounding per batch). Merge adds the sums and counts, so
// accumulating parts separately and merging equals accumulating everything in one (sum of Hessians across ranks).
//
// Not thread-safe: one accumulator per module per thread; Merge to combine.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace llmc {

class HessianAccumulator {
 public:
  // For a Linear with `columns` input features (H is [columns, columns], columns^2 floats of memory).
  explicit HessianAccumulator(int64_t columns);

  int64_t columns() const { return n_; }
  // Tokens (rows of x) added so far.
  int64_t num_tokens() const { return tokens_; }
  // Calibration samples added so far, counted as llm-compressor counts them (the N of H = 2/N sum x x^T).
  int64_t num_samples() const { return samples_; }

  // Adds x [tokens, columns] (row-major fp32, the module's input) coming from `samples` calibration samples
  // (sequences): llm-compressor's hook sees one [batch, seq, hidden] input per forward and counts `batch`; pass
  // the number of sequences these tokens belong to (1 for one sequence per call). Uses OpenBLAS (its threads).
  // Fails on a negative count; tokens == 0 only adds to the sample count.
  absl::Status Add(const float* x, int64_t tokens, int64_t samples = 1);

  // Adds another accumulator's sums and counts (e.g. another rank's or chunk's). Fails when the sizes differ.
  absl::Status Merge(const HessianAccumulator& other);

  // The raw sum X^T X over all tokens, symmetric [columns, columns] row-major (not normalized).
  std::vector<float> SumXtX() const;
  // H = (2 / num_samples) * X^T X as llm-compressor holds it for the solver (all zeros when nothing was added).
  std::vector<float> Hessian() const;
  // Hessian() without a copy: the accumulator is left empty (zero sums and counts) and can be reused.
  std::vector<float> TakeHessian();

  // The diagonal of the raw sum, sum of x_c^2 over all tokens per column c [columns].
  std::vector<float> DiagonalSum() const {
    std::vector<float> d(static_cast<size_t>(n_));
    for (int64_t c = 0; c < n_; ++c) d[c] = sum_[c * n_ + c];
    return d;
  }

  // Clears sums and counts.
  void Reset();

  // The raw parts, for summing over the ranks of a job in place: X^T X (only its upper triangle, c >= r, is
  // maintained; the rest may hold anything) and the counts.
  absl::Span<float> raw_sum() { return absl::MakeSpan(sum_); }
  void set_counts(int64_t tokens, int64_t samples) {
    tokens_ = tokens;
    samples_ = samples;
  }

 private:
  // Copies the upper triangle of sum_ to the lower one of `m` (a copy of sum_).
  void Symmetrize(std::vector<float>& m) const;

  int64_t n_;
  int64_t tokens_ = 0;
  int64_t samples_ = 0;
  std::vector<float> sum_;  // [n_, n_] row-major; only the upper triangle (c >= r) is maintained
};

// Wanda's statistic: per input channel c, sum over tokens of x_t[c]^2 (fp64), plus the counts.
class RowNormAccumulator {
 public:
  explicit RowNormAccumulator(int64_t columns);

  int64_t columns() const { return static_cast<int64_t>(sum_sq_.size()); }
  int64_t num_tokens() const { return tokens_; }
  int64_t num_samples() const { return samples_; }

  // x [tokens, columns] row-major; `samples` as in HessianAccumulator::Add.
  absl::Status Add(const float* x, int64_t tokens, int64_t samples = 1);
  absl::Status Merge(const RowNormAccumulator& other);

  // sum_t x_t[c]^2 for every column c.
  const std::vector<double>& SumSquares() const { return sum_sq_; }
  // sum_t x_t[c]^2 / num_samples as fp32: llm-compressor's `row_scalars` (WandaPrune takes the sums and N).
  std::vector<float> RowScalars() const;

  void Reset();

  // The raw parts, for summing over the ranks of a job in place.
  absl::Span<double> raw_sum_squares() { return absl::MakeSpan(sum_sq_); }
  void set_counts(int64_t tokens, int64_t samples) {
    tokens_ = tokens;
    samples_ = samples;
  }

 private:
  int64_t tokens_ = 0;
  int64_t samples_ = 0;
  std::vector<double> sum_sq_;
};

}  // namespace llmc
