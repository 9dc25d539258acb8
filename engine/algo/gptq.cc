#include "engine/algo/gptq.h"

#include <cblas.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "engine/algo/inverse_hessian.h"

namespace llmc {
namespace {

// llm-compressor's SPARSITY_THRESHOLD (modifiers/utils/constants.py): GPTQ preserves zeros from this fraction on.
constexpr float kSparsityThreshold = 0.05f;
// torch.isclose(w, 0) with the default atol (rtol * |0| adds nothing).
constexpr float kZeroAtol = 1e-8f;

Strategy InferStrategy(const WeightQParams& p) {
  if (!p.per_row) return Strategy::kTensor;
  if (p.global_scale != 0.0f) return Strategy::kTensorGroup;
  if (p.group_cols < p.cols) return Strategy::kGroup;
  return Strategy::kChannel;
}

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

// Runs fn(r0, r1) over [0, rows) split into `chunks` contiguous ranges (on `pool` when there is more than one).
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

absl::StatusOr<GptqResult> GptqQuantize(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                                        const float* hessian, int64_t num_samples, GroupQuantizer* quantizer,
                                        const GptqOptions& options) {
  // ---- validation ----
  if (quantizer == nullptr) return absl::InvalidArgumentError(absl::StrCat(module, ": GPTQ needs a quantizer"));
  if (weight == nullptr || hessian == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(module, ": GPTQ needs the weight and its Hessian"));
  if (rows <= 0 || cols <= 0 || quantizer->rows() != rows || quantizer->cols() != cols)
    return absl::InvalidArgumentError(absl::StrCat(module, ": weight [", rows, ", ", cols,
                                                   "] does not match the quantizer's [", quantizer->rows(), ", ",
                                                   quantizer->cols(), "]"));
  if (options.block_size <= 0)
    return absl::InvalidArgumentError(absl::StrCat(module, ": block_size must be positive, got ", options.block_size));
  if (num_samples <= 0)
    return absl::FailedPreconditionError(absl::StrCat(
        module, ": no calibration samples reached this module, so GPTQ has no Hessian; check the calibration data "
                "and that the module is used in the forward pass, or add it to ignore"));
  if (options.keep_mask != nullptr && static_cast<int64_t>(options.keep_mask->size()) != rows * cols)
    return absl::InvalidArgumentError(absl::StrCat(module, ": keep_mask has ", options.keep_mask->size(),
                                                   " entries for a weight of ", rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(weight[i]))
      return absl::InvalidArgumentError(absl::StrCat(module, ": the weight has a NaN or Inf at [", i / cols, ", ",
                                                     i % cols, "]; check the model checkpoint"));
  for (int64_t i = 0; i < cols; ++i)
    if (!std::isfinite(hessian[i * cols + i]))
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": the Hessian has a NaN or Inf on its diagonal at column ", i,
          "; the calibration activations of this module overflowed or contain NaN"));

  // ---- strategy and column order ----
  const WeightQParams& p0 = quantizer->params();
  const Strategy strategy = options.weight_args ? options.weight_args->strategy : InferStrategy(p0);
  const bool grouped = strategy == Strategy::kGroup || strategy == Strategy::kTensorGroup;
  ActOrder order;
  if (options.weight_args) {
    LLMC_ASSIGN_OR_RETURN(ResolvedActOrder res, ResolveActOrder(module, options.actorder, *options.weight_args));
    order = res.order;
  } else {
    LLMC_ASSIGN_OR_RETURN(order, ParseActOrder(options.actorder));
    if (strategy != Strategy::kGroup) order = ActOrder::kNone;
  }
  if (!grouped) order = ActOrder::kNone;

  std::vector<int64_t> perm;
  if (order != ActOrder::kNone) {
    perm.resize(cols);
    std::iota(perm.begin(), perm.end(), int64_t{0});
    // torch.argsort(diag(H), descending=True); stable here so ties (dead columns) keep their order.
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return hessian[a * cols + a] > hessian[b * cols + b]; });
  }
  auto src_col = [&](int64_t j) { return perm.empty() ? j : perm[j]; };

  // Working copy in solve order.
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = weight + r * cols;
    float* dst = w.data() + r * cols;
    if (perm.empty()) {
      std::copy(src, src + cols, dst);
    } else {
      for (int64_t j = 0; j < cols; ++j) dst[j] = src[perm[j]];
    }
  }

  // ---- quantization parameters from the unmodified weight, before dead columns are zeroed ----
  std::vector<int32_t> col_group(cols, 0);  // group of each solve-order column
  if (grouped) {
    const int64_t gs = quantizer->group_cols(), ng = quantizer->num_groups();
    const float* observed = order == ActOrder::kGroup ? w.data() : weight;
    for (int64_t g = 0; g < ng; ++g)
      LLMC_RETURN_IF_ERROR(quantizer->Observe(observed, cols, g * gs, std::min(gs, cols - g * gs), g));
    for (int64_t j = 0; j < cols; ++j)
      col_group[j] = static_cast<int32_t>((order == ActOrder::kWeight ? perm[j] : j) / gs);
  } else {
    LLMC_RETURN_IF_ERROR(quantizer->Observe(weight, cols, 0, cols, 0));
  }
  quantizer->mutable_params().g_idx.clear();

  // ---- which weights may change ----
  std::vector<float> keep;  // [rows, cols] solve order, 1 = may be updated, 0 = keeps its value
  if (options.keep_mask != nullptr) {
    keep.resize(w.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) keep[r * cols + j] = (*options.keep_mask)[r * cols + src_col(j)] ? 1.f : 0.f;
  } else {
    int64_t zeros = 0;
    for (float v : w) zeros += v == 0.0f;
    const float sparsity = static_cast<float>(zeros) / static_cast<float>(rows * cols);
    if (sparsity >= kSparsityThreshold) {
      keep.resize(w.size());
      for (size_t i = 0; i < w.size(); ++i) keep[i] = std::fabs(w[i]) <= kZeroAtol ? 0.f : 1.f;
    }
  }
  const bool preserve = !keep.empty();

  // ---- inverse-Hessian factor; dead columns ----
  LLMC_ASSIGN_OR_RETURN(InverseHessianFactor U,
                        InverseHessianFactor::Compute(module, hessian, cols, perm.empty() ? nullptr : perm.data(),
                                                      options.dampening_frac, options.double_precision_inverse));
  for (int64_t j = 0; j < cols; ++j)
    if (U.dead()[j])
      for (int64_t r = 0; r < rows; ++r) w[r * cols + j] = 0.0f;

  GptqResult result;
  result.actorder = order;
  result.preserved_zeros = preserve;
  result.dead_columns = U.num_dead();
  if (!U.factored()) {
    result.fell_back_to_rtn = true;
    result.warning = absl::StrCat(
        module, ": ", U.failure(), " (dampening_frac ", options.dampening_frac,
        "); falling back to round-to-nearest for this module. Consider increasing dampening_frac, using more "
        "calibration samples, or shuffling the calibration dataset");
    spdlog::warn("{}", result.warning);
  }

  // ---- the blocked column loop ----
  const int64_t B = std::min<int64_t>(options.block_size, cols);
  const int threads = static_cast<int>(std::min<int64_t>(ResolveThreads(options.num_threads), std::max<int64_t>(1, rows / 64)));
  std::unique_ptr<ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<ThreadPool>(threads);
  std::vector<float> blk(static_cast<size_t>(B * rows));   // [i][r]: column i1+i of the block, updated in place
  std::vector<float> err(static_cast<size_t>(B * rows));   // [i][r]: (w - q) / U_ii
  std::vector<float> kblk(preserve ? static_cast<size_t>(B * rows) : 0);
  std::vector<float> trail;                                // [rows, cols - i2] product, preserve only
  std::vector<double> row_loss(rows, 0.0);
  const float* u = U.data();
  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    const int64_t i2 = std::min(i1 + B, cols), count = i2 - i1;
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = w.data() + r * cols + i1;
      for (int64_t i = 0; i < count; ++i) blk[i * rows + r] = src[i];
      if (preserve) {
        const float* ks = keep.data() + r * cols + i1;
        for (int64_t i = 0; i < count; ++i) kblk[i * rows + r] = ks[i];
      }
    }
    ForRowChunks(pool.get(), rows, threads, [&](int64_t r0, int64_t r1) {
      for (int64_t i = 0; i < count; ++i) {
        const int64_t c = i1 + i;
        const float d = u[c * cols + c];
        const int64_t g = col_group[c];
        float* wc = blk.data() + i * rows;
        float* ec = err.data() + i * rows;
        for (int64_t r = r0; r < r1; ++r) {
          const float x = wc[r];
          const float q = quantizer->FakeQuant(x, r, g);
          const float diff = x - q;
          row_loss[r] += static_cast<double>(diff * diff / (d * d));
          ec[r] = diff / d;
          wc[r] = q;
        }
        const float* urow = u + c * cols + i1;
        for (int64_t j = i + 1; j < count; ++j) {
          const float h = urow[j];
          float* wj = blk.data() + j * rows;
          if (preserve) {
            const float* kj = kblk.data() + j * rows;
            for (int64_t r = r0; r < r1; ++r) wj[r] -= (ec[r] * h) * kj[r];
          } else {
            for (int64_t r = r0; r < r1; ++r) wj[r] -= ec[r] * h;
          }
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
        // W[:, i2:] -= Err^T U[i1:i2, i2:]
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
          const float* k = keep.data() + r * cols + i2;
          for (int64_t c = 0; c < n; ++c) dst[c] -= t[c] * k[c];
        }
      }
    }
  }
  double loss = 0;
  for (double l : row_loss) loss += l;
  result.loss = loss / 2;

  // ---- back to the original column order ----
  if (perm.empty()) {
    result.weight = std::move(w);
  } else {
    result.weight.resize(w.size());
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = w.data() + r * cols;
      float* dst = result.weight.data() + r * cols;
      for (int64_t j = 0; j < cols; ++j) dst[perm[j]] = src[j];
    }
  }
  if (order == ActOrder::kGroup) {
    std::vector<int32_t>& g_idx = quantizer->mutable_params().g_idx;
    g_idx.assign(cols, 0);
    for (int64_t j = 0; j < cols; ++j) g_idx[perm[j]] = col_group[j];
  }
  result.params = quantizer->params();
  return result;
}

}  // namespace llmc
