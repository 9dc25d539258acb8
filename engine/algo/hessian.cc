#include "engine/algo/hessian.h"

#include <cblas.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace llmc {

HessianAccumulator::HessianAccumulator(int64_t columns)
    : n_(columns < 0 ? 0 : columns), sum_(static_cast<size_t>(n_) * static_cast<size_t>(n_), 0.0f) {}

absl::Status HessianAccumulator::Add(const float* x, int64_t tokens, int64_t samples) {
  if (tokens < 0 || samples < 0)
    return absl::InvalidArgumentError(absl::StrCat("HessianAccumulator::Add: negative count (tokens ", tokens,
                                                   ", samples ", samples, ")"));
  if (tokens > 0 && n_ > 0) {
    if (x == nullptr) return absl::InvalidArgumentError("HessianAccumulator::Add: null input");
    // sum += x^T x, x [tokens, n] row-major: SYRK with op(A) = A^T, upper triangle of the row-major sum.
    // OpenBLAS takes 32-bit sizes: split very long inputs.
    constexpr int64_t kMaxTokens = int64_t{1} << 30;
    for (int64_t t0 = 0; t0 < tokens; t0 += kMaxTokens) {
      const int64_t k = std::min(kMaxTokens, tokens - t0);
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<blasint>(n_), static_cast<blasint>(k), 1.0f,
                  x + t0 * n_, static_cast<blasint>(n_), 1.0f, sum_.data(), static_cast<blasint>(n_));
    }
  }
  tokens_ += tokens;
  samples_ += samples;
  return absl::OkStatus();
}

absl::Status HessianAccumulator::Merge(const HessianAccumulator& other) {
  if (other.n_ != n_)
    return absl::InvalidArgumentError(
        absl::StrCat("HessianAccumulator::Merge: sizes differ (", n_, " vs ", other.n_, " columns)"));
  for (int64_t r = 0; r < n_; ++r) {
    float* dst = sum_.data() + r * n_;
    const float* src = other.sum_.data() + r * n_;
    for (int64_t c = r; c < n_; ++c) dst[c] += src[c];
  }
  tokens_ += other.tokens_;
  samples_ += other.samples_;
  return absl::OkStatus();
}

void HessianAccumulator::Symmetrize(std::vector<float>& m) const {
  for (int64_t r = 0; r < n_; ++r)
    for (int64_t c = 0; c < r; ++c) m[r * n_ + c] = m[c * n_ + r];
}

std::vector<float> HessianAccumulator::SumXtX() const {
  std::vector<float> m = sum_;
  Symmetrize(m);
  return m;
}

namespace {
// 2 / N in fp32 like the library's `math.sqrt(2 / num_samples)` squared; 0 when nothing was added.
void Normalize(std::vector<float>& m, int64_t samples) {
  if (samples <= 0) {
    std::fill(m.begin(), m.end(), 0.0f);
    return;
  }
  const float f = static_cast<float>(2.0 / static_cast<double>(samples));
  for (float& v : m) v *= f;
}
}  // namespace

std::vector<float> HessianAccumulator::Hessian() const {
  std::vector<float> m = SumXtX();
  Normalize(m, samples_);
  return m;
}

std::vector<float> HessianAccumulator::TakeHessian() {
  std::vector<float> m = std::move(sum_);
  Symmetrize(m);
  Normalize(m, samples_);
  sum_.assign(static_cast<size_t>(n_) * static_cast<size_t>(n_), 0.0f);
  tokens_ = samples_ = 0;
  return m;
}

void HessianAccumulator::Reset() {
  std::fill(sum_.begin(), sum_.end(), 0.0f);
  tokens_ = samples_ = 0;
}

RowNormAccumulator::RowNormAccumulator(int64_t columns) : sum_sq_(columns < 0 ? 0 : columns, 0.0) {}

absl::Status RowNormAccumulator::Add(const float* x, int64_t tokens, int64_t samples) {
  if (tokens < 0 || samples < 0)
    return absl::InvalidArgumentError(absl::StrCat("RowNormAccumulator::Add: negative count (tokens ", tokens,
                                                   ", samples ", samples, ")"));
  const int64_t n = columns();
  if (tokens > 0 && n > 0 && x == nullptr) return absl::InvalidArgumentError("RowNormAccumulator::Add: null input");
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * n;
    for (int64_t c = 0; c < n; ++c) sum_sq_[c] += static_cast<double>(row[c]) * row[c];
  }
  tokens_ += tokens;
  samples_ += samples;
  return absl::OkStatus();
}

absl::Status RowNormAccumulator::Merge(const RowNormAccumulator& other) {
  if (other.columns() != columns())
    return absl::InvalidArgumentError(
        absl::StrCat("RowNormAccumulator::Merge: sizes differ (", columns(), " vs ", other.columns(), " columns)"));
  for (size_t c = 0; c < sum_sq_.size(); ++c) sum_sq_[c] += other.sum_sq_[c];
  tokens_ += other.tokens_;
  samples_ += other.samples_;
  return absl::OkStatus();
}

std::vector<float> RowNormAccumulator::RowScalars() const {
  std::vector<float> out(sum_sq_.size(), 0.0f);
  if (samples_ <= 0) return out;
  for (size_t c = 0; c < out.size(); ++c) out[c] = static_cast<float>(sum_sq_[c] / static_cast<double>(samples_));
  return out;
}

void RowNormAccumulator::Reset() {
  std::fill(sum_sq_.begin(), sum_sq_.end(), 0.0);
  tokens_ = samples_ = 0;
}

}  // namespace llmc
