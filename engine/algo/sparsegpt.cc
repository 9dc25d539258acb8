#include "engine/algo/sparsegpt.h"

#include <cblas.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "engine/algo/inverse_hessian.h"
#include "engine/algo/mask_structure.h"

namespace llmc {
namespace {

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

template <typename Fn>
void ForRowChunks(ThreadPool* pool, int64_t rows, int chunks, Fn&& fn) {
  if (pool == nullptr || chunks <= 1) {
    fn(int64_t{0}, rows);
    return;
  }
  const int64_t step = (rows + chunks - 1) / chunks;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t r1 = std::min(rows, r0 + step);
    pool->Submit([&fn, r0, r1] { fn(r0, r1); });
  }
  pool->Wait();
}

}  // namespace

std::vector<uint8_t> SparseGptResult::KeepMask() const {
  std::vector<uint8_t> m(weight.size());
  for (size_t i = 0; i < weight.size(); ++i) m[i] = weight[i] != 0.0f;
  return m;
}

absl::StatusOr<SparseGptResult> SparseGptPrune(absl::string_view module, const float* weight, int64_t rows,
                                               int64_t cols, const float* hessian, const SparseGptOptions& options) {
  if (weight == nullptr || hessian == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(module, ": SparseGPT needs the weight and its Hessian"));
  if (rows <= 0 || cols <= 0)
    return absl::InvalidArgumentError(absl::StrCat(module, ": invalid weight shape [", rows, ", ", cols, "]"));
  if (options.block_size <= 0)
    return absl::InvalidArgumentError(absl::StrCat(module, ": block_size must be positive, got ", options.block_size));
  LLMC_ASSIGN_OR_RETURN(MaskStructure ms, ParseMaskStructure(module, options.mask_structure));
  if (!ms.structured() && !(options.sparsity >= 0.0 && options.sparsity < 1.0))
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": sparsity must be in [0, 1) for unstructured pruning, got ", options.sparsity));
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(weight[i]))
      return absl::InvalidArgumentError(absl::StrCat(module, ": the weight has a NaN or Inf at [", i / cols, ", ",
                                                     i % cols, "]; check the model checkpoint"));

  const int64_t B = std::min<int64_t>(options.block_size, cols);
  if (ms.structured()) {
    // N:M windows start at in-block columns i % M == 0; each must hold at least N columns.
    const int64_t tails[2] = {B % ms.m, (cols % B) % ms.m};
    for (int64_t t : tails)
      if (t != 0 && t < ms.n)
        return absl::InvalidArgumentError(absl::StrCat(
            module, ": mask_structure ", options.mask_structure, " with block_size ", options.block_size,
            " and in_features ", cols, " leaves a window of ", t, " columns (fewer than ", ms.n,
            "); use a block_size and in_features that are multiples of ", ms.m));
  }

  LLMC_ASSIGN_OR_RETURN(InverseHessianFactor U, InverseHessianFactor::Compute(module, hessian, cols, nullptr,
                                                                              options.dampening_frac,
                                                                              options.double_precision_inverse));
  SparseGptResult result;
  result.dead_columns = U.num_dead();
  std::vector<float> w(weight, weight + rows * cols);
  for (int64_t j = 0; j < cols; ++j)
    if (U.dead()[j])
      for (int64_t r = 0; r < rows; ++r) w[r * cols + j] = 0.0f;
  if (!U.factored()) {
    result.fell_back = true;
    result.warning = absl::StrCat(module, ": ", U.failure(), " (dampening_frac ", options.dampening_frac,
                                  "); pruning without error compensation for this module. Consider increasing "
                                  "dampening_frac, using more calibration samples, or shuffling the calibration "
                                  "dataset");
    spdlog::warn("{}", result.warning);
  }

  // The preserved mask (1 = already zero, stays pruned).
  std::vector<uint8_t> base;
  if (options.preserve_sparsity_mask) {
    base.resize(w.size());
    int64_t zeros = 0;
    for (size_t i = 0; i < w.size(); ++i) zeros += (base[i] = w[i] == 0.0f);
    const float current = static_cast<float>(zeros) / static_cast<float>(rows * cols);
    if (current > static_cast<float>(options.sparsity))
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": the weight is already ", current, " sparse, above the target sparsity ", options.sparsity,
          "; turn preserve_sparsity_mask off or raise the sparsity"));
  }
  const bool preserve = !base.empty();

  const int threads =
      static_cast<int>(std::min<int64_t>(ResolveThreads(options.num_threads), std::max<int64_t>(1, rows / 64)));
  std::unique_ptr<ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<ThreadPool>(threads);
  std::vector<float> blk(static_cast<size_t>(B * rows));    // [i][r] column i1+i, updated in place
  std::vector<float> err(static_cast<size_t>(B * rows));    // [i][r] (w - q) / U_ii
  std::vector<uint8_t> mblk(static_cast<size_t>(B * rows));  // [i][r] pruned
  std::vector<float> metric;
  std::vector<float> trail;
  std::vector<double> row_loss(rows, 0.0);
  std::vector<int64_t> row_pruned(rows, 0);
  const float* u = U.data();

  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    const int64_t i2 = std::min(i1 + B, cols), count = i2 - i1;
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = w.data() + r * cols + i1;
      for (int64_t i = 0; i < count; ++i) {
        blk[i * rows + r] = src[i];
        mblk[i * rows + r] = preserve ? base[r * cols + i1 + i] : 0;
      }
    }
    if (!ms.structured()) {
      const int64_t numel = rows * count;
      const int64_t k = static_cast<int64_t>(static_cast<double>(numel) * options.sparsity);
      int64_t already = 0;
      if (preserve)
        for (size_t i = 0; i < static_cast<size_t>(numel); ++i) already += mblk[i];
      if (!preserve || k > already) {
        metric.resize(static_cast<size_t>(numel));
        for (int64_t i = 0; i < count; ++i) {
          const float d = u[(i1 + i) * cols + i1 + i];
          for (int64_t r = 0; r < rows; ++r) {
            const float x = blk[i * rows + r];
            float m = x * x / (d * d);
            if (preserve && mblk[i * rows + r]) m = 0.0f;  // (~mask) * w^2 / d^2
            metric[i * rows + r] = m;
          }
        }
        std::vector<float> sorted = metric;
        std::nth_element(sorted.begin(), sorted.begin() + k, sorted.end());
        const float thresh = sorted[k];
        for (size_t i = 0; i < static_cast<size_t>(numel); ++i) mblk[i] = metric[i] <= thresh;
      }
    }

    ForRowChunks(pool.get(), rows, threads, [&](int64_t r0, int64_t r1) {
      for (int64_t i = 0; i < count; ++i) {
        const int64_t c = i1 + i;
        const float d = u[c * cols + c];
        float* wc = blk.data() + i * rows;
        float* ec = err.data() + i * rows;
        if (ms.structured() && i % ms.m == 0) {
          const int64_t width = std::min<int64_t>(ms.m, count - i);  // >= ms.n, checked up front
          std::vector<float> mt(width);
          std::vector<int> idx(width);
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t j = 0; j < width; ++j) {
              const float x = blk[(i + j) * rows + r];
              const float dj = u[(c + j) * cols + c + j];
              float m = x * x / (dj * dj);
              if (preserve && base[r * cols + c + j]) m = 0.0f;
              mt[j] = m;
              idx[j] = static_cast<int>(j);
            }
            std::partial_sort(idx.begin(), idx.begin() + ms.n, idx.begin() + width,
                              [&](int a, int b) { return mt[a] < mt[b] || (mt[a] == mt[b] && a < b); });
            for (int j = 0; j < ms.n; ++j) mblk[(i + idx[j]) * rows + r] = 1;
          }
        }
        const uint8_t* mc = mblk.data() + i * rows;
        for (int64_t r = r0; r < r1; ++r) {
          row_pruned[r] += mc[r];
          const float x = wc[r];
          const float q = mc[r] ? 0.0f : x;
          const float diff = x - q;
          row_loss[r] += static_cast<double>(diff * diff / (d * d));
          ec[r] = diff / d;
          wc[r] = q;
        }
        const float* urow = u + c * cols + i1;
        for (int64_t j = i + 1; j < count; ++j) {
          const float h = urow[j];
          float* wj = blk.data() + j * rows;
          for (int64_t r = r0; r < r1; ++r) wj[r] -= ec[r] * h;
        }
      }
    });
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = w.data() + r * cols + i1;
      for (int64_t i = 0; i < count; ++i) dst[i] = blk[i * rows + r];
    }
    if (i2 < cols) {
      const int64_t n = cols - i2;
      if (!preserve) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(n),
                    static_cast<blasint>(count), -1.0f, err.data(), static_cast<blasint>(rows), u + i1 * cols + i2,
                    static_cast<blasint>(cols), 1.0f, w.data() + i2, static_cast<blasint>(cols));
      } else {
        trail.resize(static_cast<size_t>(rows * n));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(n),
                    static_cast<blasint>(count), 1.0f, err.data(), static_cast<blasint>(rows), u + i1 * cols + i2,
                    static_cast<blasint>(cols), 0.0f, trail.data(), static_cast<blasint>(n));
        for (int64_t r = 0; r < rows; ++r) {
          float* dst = w.data() + r * cols + i2;
          const float* t = trail.data() + r * n;
          const uint8_t* b = base.data() + r * cols + i2;
          for (int64_t c = 0; c < n; ++c) dst[c] -= b[c] ? 0.0f : t[c];
        }
      }
    }
  }
  double loss = 0;
  for (double l : row_loss) loss += l;
  result.loss = loss / 2;
  for (int64_t p : row_pruned) result.pruned += p;
  result.weight = std::move(w);
  return result;
}

}  // namespace llmc
