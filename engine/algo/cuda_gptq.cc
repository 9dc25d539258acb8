#include "engine/algo/cuda_gptq.h"

#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "engine/algo/gptq_common.h"
#include "engine/algo/obs_common.h"
#include "engine/backend/cuda/gptq_kernels.h"
#include "engine/model/cuda_status.h"

namespace llmc {
namespace {

using cuda::FakeQuantSpec;

// cuSOLVER's potri takes 32-bit sizes: n * n must fit an int.
constexpr int64_t kMaxCols = 46340;

// ---- recognizing the quantizer's arithmetic ----

// Inputs that tell the candidate arithmetics apart: zeros, ties on several grids, saturation, a wide spread of
// magnitudes (so that bf16 / fp16 / fp32 rounding and subnormal fp8 / fp16 codes all show).
std::vector<float> ProbeValues(float scale) {
  std::vector<float> xs = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e30f, -1e30f, 65504.0f, 70000.0f, -70000.0f};
  for (int k = -300; k <= 300; ++k) xs.push_back(static_cast<float>(k) * 0.05f);
  for (int k = -140; k <= 140; ++k) xs.push_back((static_cast<float>(k) + 0.5f) * scale);
  for (int k = -40; k <= 40; ++k) xs.push_back(std::ldexp(1.0f + 1.0f / 3.0f, k));
  uint32_t s = 12345u;
  for (int i = 0; i < 400; ++i) {
    s = s * 1664525u + 1013904223u;
    const float u = static_cast<float>(s >> 8) / 16777216.0f;
    const float v = std::pow(10.0f, u * 14.0f - 10.0f);
    xs.push_back((s & 1u) ? -v : v);
  }
  return xs;
}

std::vector<FakeQuantSpec> Candidates(bool asymmetric) {
  std::vector<FakeQuantSpec> out;
  for (FakeQuantSpec::Round r :
       {FakeQuantSpec::Round::kBf16, FakeQuantSpec::Round::kF16, FakeQuantSpec::Round::kNone}) {
    for (int bits = 2; bits <= 8; ++bits) {
      FakeQuantSpec s;
      s.kind = FakeQuantSpec::Kind::kInt;
      s.round = r;
      s.qmax = static_cast<float>((1 << (bits - 1)) - 1);
      s.qmin = -static_cast<float>(1 << (bits - 1));
      s.asymmetric = asymmetric;
      out.push_back(s);
    }
    if (!asymmetric) {
      FakeQuantSpec s;
      s.kind = FakeQuantSpec::Kind::kFp8;
      s.round = r;
      out.push_back(s);
    }
  }
  return out;
}

// The device arithmetic that reproduces q.FakeQuant bit for bit, or nullopt. GroupQuantizer keeps its dtype and
// scheme private, so the layout of its parameters narrows the family (NVFP4 has a global scale; only asymmetric
// int has zero points) and a copy's FakeQuant is compared with each candidate under several scales and zero
// points.
std::optional<FakeQuantSpec> RecognizeScheme(const GroupQuantizer& q) {
  const WeightQParams& p = q.params();
  if (p.global_scale != 0.0f || p.scale.empty() || p.rows <= 0 || p.cols <= 0 || p.cols > kMaxCols) return std::nullopt;
  const bool asymmetric = !p.zero_point.empty();
  GroupQuantizer probe = q;
  WeightQParams& pp = probe.mutable_params();
  const float scales[] = {1.0f, 1.001953125f, 0.0123456791f, 3.0517578125e-05f, 0.3f, 7.5f, 1e-3f, 2.0f};
  const std::vector<float> zps = asymmetric ? std::vector<float>{0.0f, 1.0f, -2.0f, 5.0f} : std::vector<float>{0.0f};
  struct Probe {
    float x, scale, zp, want;
  };
  std::vector<Probe> probes;
  for (float s : scales)
    for (float z : zps) {
      pp.scale[0] = s;
      if (asymmetric) pp.zero_point[0] = z;
      for (float x : ProbeValues(s)) probes.push_back({x, s, z, probe.FakeQuant(x, 0, 0)});
    }
  for (const FakeQuantSpec& c : Candidates(asymmetric)) {
    bool same = true;
    for (const Probe& pr : probes) {
      const float got = cuda::gptq::FakeQuantValue(c, pr.x, pr.scale, pr.zp);
      if (std::memcmp(&got, &pr.want, sizeof(float)) != 0) {
        same = false;
        break;
      }
    }
    if (same) return c;
  }
  return std::nullopt;
}

// ---- host observation ----

// Observes every group of `w` (rows x ld) on `q`, groups spread over `threads` threads, each observing on its own
// copy of the quantizer (their parameters are then copied back group by group): the same values as one loop.
absl::Status ObserveGroups(GroupQuantizer* q, const float* w, int64_t ld, int threads) {
  const int64_t ng = q->num_groups(), gs = q->group_cols(), cols = q->cols();
  threads = static_cast<int>(std::min<int64_t>(threads, ng));
  if (threads <= 1) {
    for (int64_t g = 0; g < ng; ++g) LLMC_RETURN_IF_ERROR(q->Observe(w, ld, g * gs, std::min(gs, cols - g * gs), g));
    return absl::OkStatus();
  }
  std::vector<GroupQuantizer> copies(threads, *q);
  std::vector<absl::Status> status(ng);
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (int64_t g = t; g < ng; g += threads)
          status[g] = copies[t].Observe(w, ld, g * gs, std::min(gs, cols - g * gs), g);
      });
  }
  for (const absl::Status& s : status) LLMC_RETURN_IF_ERROR(s);
  WeightQParams& p = q->mutable_params();
  const int64_t rows_with_params = p.per_row ? p.rows : 1;
  for (int64_t g = 0; g < ng; ++g) {
    const WeightQParams& src = copies[g % threads].params();
    for (int64_t r = 0; r < rows_with_params; ++r) {
      const int64_t idx = r * ng + g;
      p.scale[idx] = src.scale[idx];
      if (!p.zero_point.empty()) p.zero_point[idx] = src.zero_point[idx];
    }
  }
  return absl::OkStatus();
}

// Phase times for the debug log (synchronizes the stream only when debug logging is on).
class PhaseLog {
 public:
  PhaseLog(absl::string_view module, CudaContext* ctx)
      : module_(module), ctx_(ctx), on_(spdlog::should_log(spdlog::level::debug)), t0_(Clock::now()), last_(t0_) {}
  void Mark(const char* phase) {
    if (!on_) return;
    cudaStreamSynchronize(ctx_->stream());
    const auto now = Clock::now();
    absl::StrAppend(&line_, " ", phase, " ", Ms(last_, now), " ms;");
    last_ = now;
  }
  ~PhaseLog() {
    if (on_) spdlog::debug("{}: CUDA GPTQ{} total {} ms", module_, line_, Ms(t0_, Clock::now()));
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double Ms(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  }
  std::string module_;
  CudaContext* ctx_;
  bool on_;
  Clock::time_point t0_, last_;
  std::string line_;
};

template <typename T>
absl::Status Upload(DeviceArray<T>* d, const T* host, int64_t n, absl::string_view what, cudaStream_t stream) {
  LLMC_RETURN_IF_ERROR(d->Reserve(std::max<int64_t>(1, n), what));
  if (n > 0)
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d->data(), host, n * sizeof(T), cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

}  // namespace

bool CudaGptqSupports(const GroupQuantizer& q) { return RecognizeScheme(q).has_value(); }

absl::StatusOr<GptqResult> CudaGptqQuantize(absl::string_view module, const float* weight, int64_t rows,
                                            int64_t cols, const float* d_hessian, int64_t num_samples,
                                            GroupQuantizer* quantizer, const GptqOptions& options, CudaContext* ctx) {
  // ---- validation (GptqQuantize's, in its order) ----
  LLMC_RETURN_IF_ERROR(ValidateGptqArgs(module, weight, rows, cols, d_hessian, num_samples, quantizer, options));
  if (ctx == nullptr) return absl::InvalidArgumentError(absl::StrCat(module, ": CUDA GPTQ needs a CUDA context"));
  const int64_t n = rows * cols;
  const std::optional<FakeQuantSpec> spec = RecognizeScheme(*quantizer);
  if (!spec)
    return absl::UnimplementedError(absl::StrCat(
        module, ": GPTQ on the GPU supports integer and fp8 schemes with up to ", kMaxCols,
        " input columns; this weight's scheme (NVFP4/MX?) or width [", rows, ", ", cols,
        "] is not one of them; run GptqQuantize on the CPU (check CudaGptqSupports first)"));

  PhaseLog phases(module, ctx);
  const cudaStream_t stream = ctx->stream();
  LLMC_ASSIGN_OR_RETURN(auto d_scratch,
                        DeviceArray<unsigned long long>::Create(cuda::kGptqScratchWords, "GPTQ scratch"));
  DeviceArray<float> d_src;  // the weight as given; later the result in the original column order
  // The weight goes up, and the result comes back, through the context's pinned buffer (copied to and from it on
  // several host threads): from pageable memory the driver stages the copy itself at a fraction of the bus's rate.
  const size_t weight_bytes = static_cast<size_t>(n) * sizeof(float);
  absl::StatusOr<void*> pinned = ctx->PinnedStaging(weight_bytes);
  const int copy_threads = ResolveThreads(options.num_threads);
  if (pinned.ok()) {
    ParallelCopy(*pinned, weight, weight_bytes, copy_threads);
    LLMC_RETURN_IF_ERROR(Upload(&d_src, static_cast<const float*>(*pinned), n, "the GPTQ weight", stream));
  } else {
    LLMC_RETURN_IF_ERROR(Upload(&d_src, weight, n, "the GPTQ weight", stream));
  }
  int64_t bad = -1, zeros = 0;
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::ScanValues(d_src.data(), n, d_scratch.data(), stream, &bad, &zeros));
  if (bad >= 0) return WeightNotFiniteError(module, bad, cols);
  std::vector<float> diag(cols);
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::CopyDiagonal(d_hessian, cols, diag.data(), stream));
  LLMC_RETURN_IF_ERROR(CheckHessianDiagonal(module, diag.data(), 1, cols));
  phases.Mark("upload+scan");

  // ---- strategy and column order (as GptqQuantize) ----
  LLMC_ASSIGN_OR_RETURN(const GptqColumnOrder plan,
                        PlanGptqColumns(module, options, quantizer->params(), diag.data(), 1, cols));
  const bool grouped = plan.grouped;
  const ActOrder order = plan.order;
  const std::vector<int64_t>& perm = plan.perm;
  const std::vector<int32_t> perm32(perm.begin(), perm.end());  // for the device

  // ---- quantization parameters on the host, while the device factors the Hessian ----
  const int threads = ResolveThreads(options.num_threads);
  absl::Status observed;
  std::jthread observer([&] {
    observed = [&]() -> absl::Status {
      if (!grouped) return quantizer->Observe(weight, cols, 0, cols, 0);
      if (order != ActOrder::kGroup) return ObserveGroups(quantizer, weight, cols, threads);
      std::vector<float> permuted(static_cast<size_t>(n));  // observed in solve order (groups of permuted columns)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) permuted[r * cols + j] = weight[r * cols + perm[j]];
      return ObserveGroups(quantizer, permuted.data(), cols, threads);
    }();
    if (observed.ok()) quantizer->mutable_params().g_idx.clear();
  });

  // ---- the working weight in solve order; which weights may change ----
  DeviceArray<int32_t> d_perm;
  DeviceArray<float> d_work;  // solve order (only with a permutation; else d_src is the working weight)
  if (!perm.empty()) {
    LLMC_RETURN_IF_ERROR(Upload(&d_perm, perm32.data(), cols, "the GPTQ permutation", stream));
    LLMC_RETURN_IF_ERROR(d_work.Reserve(n, "the permuted GPTQ weight"));
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::PermuteColumns(d_src.data(), rows, cols, d_perm.data(), /*inverse=*/false, d_work.data(), stream));
  }
  float* w = perm.empty() ? d_src.data() : d_work.data();
  DeviceArray<uint8_t> d_keep;
  if (options.keep_mask != nullptr) {
    if (perm.empty()) {
      LLMC_RETURN_IF_ERROR(Upload(&d_keep, options.keep_mask->data(), n, "the GPTQ keep mask", stream));
    } else {
      DeviceArray<uint8_t> given;
      LLMC_RETURN_IF_ERROR(Upload(&given, options.keep_mask->data(), n, "the GPTQ keep mask", stream));
      LLMC_RETURN_IF_ERROR(d_keep.Reserve(n, "the permuted GPTQ keep mask"));
      LLMC_CUDA_STR_RETURN_IF_ERROR(
          cuda::PermuteColumns(given.data(), rows, cols, d_perm.data(), false, d_keep.data(), stream));
      LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // before `given` is freed
    }
  } else {
    if (GptqPreservesZeros(zeros, n)) {
      LLMC_RETURN_IF_ERROR(d_keep.Reserve(n, "the GPTQ keep mask"));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::KeepNonZero(w, n, d_keep.data(), stream));
    }
  }
  const bool preserve = d_keep.size() > 0;

  // ---- inverse-Hessian factor (InverseHessianFactor::Compute's checks, order and arithmetic) ----
  LLMC_RETURN_IF_ERROR(CheckDampeningFrac(module, options.dampening_frac));
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::ScanValues(d_hessian, cols * cols, d_scratch.data(), stream, &bad, nullptr));
  if (bad >= 0) return HessianNotFiniteError(module, bad, cols);
  const Dampening dd =
      DeadColumnsAndDamping(diag.data(), 1, cols, perm.empty() ? nullptr : perm.data(), options.dampening_frac);
  const int64_t num_dead = dd.num_dead;
  const double damp = dd.damp;
  DeviceArray<uint8_t> d_dead;
  LLMC_RETURN_IF_ERROR(Upload(&d_dead, dd.dead.data(), cols, "the GPTQ dead columns", stream));
  DeviceArray<float> d_u;
  LLMC_RETURN_IF_ERROR(d_u.Reserve(cols * cols, "the inverse-Hessian factor"));
  cuda::GptqLinalg linalg;
  LLMC_CUDA_STR_RETURN_IF_ERROR(linalg.Init(stream));
  std::string failure;
  {
    DeviceArray<double> d_a;  // n^2 doubles, or n^2 floats in the first half for the fp32 factorization
    const int64_t elems = options.double_precision_inverse ? cols * cols : (cols * cols + 1) / 2;
    LLMC_RETURN_IF_ERROR(d_a.Reserve(elems, "the Hessian factorization"));
    LLMC_CUDA_STR_RETURN_IF_ERROR(linalg.InverseHessianFactor(d_hessian, cols, perm.empty() ? nullptr : d_perm.data(),
                                                              d_dead.data(), damp, options.double_precision_inverse,
                                                              d_a.data(), d_u.data(), &failure));
  }
  if (num_dead > 0) LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::ZeroColumns(w, rows, cols, d_dead.data(), stream));
  phases.Mark("factor");

  GptqResult result;
  result.actorder = order;
  result.preserved_zeros = preserve;
  result.dead_columns = num_dead;
  const bool factored = failure.empty();
  if (!factored) MarkRtnFallback(module, failure, options.dampening_frac, &result);

  // ---- the parameters reach the device ----
  observer.join();
  LLMC_RETURN_IF_ERROR(observed);
  phases.Mark("observe-wait");
  const WeightQParams& params = quantizer->params();
  const std::vector<int32_t> col_group = plan.ColumnGroups(cols, quantizer->group_cols());
  DeviceArray<int32_t> d_group;
  DeviceArray<float> d_scale, d_zp;
  LLMC_RETURN_IF_ERROR(Upload(&d_group, col_group.data(), cols, "the GPTQ column groups", stream));
  LLMC_RETURN_IF_ERROR(Upload(&d_scale, params.scale.data(), static_cast<int64_t>(params.scale.size()),
                              "the GPTQ scales", stream));
  if (!params.zero_point.empty())
    LLMC_RETURN_IF_ERROR(Upload(&d_zp, params.zero_point.data(), static_cast<int64_t>(params.zero_point.size()),
                                "the GPTQ zero points", stream));

  // ---- the blocked column loop ----
  const int64_t B = std::min<int64_t>(options.block_size, cols);
  DeviceArray<float> d_err, d_tmp, d_tile, d_keep_tile;
  DeviceArray<double> d_loss;
  LLMC_RETURN_IF_ERROR(d_err.Reserve(B * rows, "the GPTQ block errors"));
  LLMC_RETURN_IF_ERROR(d_loss.Reserve(rows, "the GPTQ losses"));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d_loss.data(), 0, rows * sizeof(double), stream));
  if (preserve && factored && cols > B) LLMC_RETURN_IF_ERROR(d_tmp.Reserve(rows * (cols - B), "the GPTQ products"));
  const int64_t tile_floats = cuda::GptqBlockScratchFloats(B, rows, preserve);
  if (tile_floats > 0) {
    LLMC_RETURN_IF_ERROR(d_tile.Reserve(tile_floats, "the GPTQ block tile"));
    if (preserve) LLMC_RETURN_IF_ERROR(d_keep_tile.Reserve(tile_floats, "the GPTQ keep tile"));
  }
  cuda::GptqBlockArgs args;
  args.w = w;
  args.rows = rows;
  args.cols = cols;
  args.u = d_u.data();
  args.col_group = d_group.data();
  args.scale = d_scale.data();
  args.zero_point = params.zero_point.empty() ? nullptr : d_zp.data();
  args.num_groups = params.num_groups;
  args.per_row = params.per_row;
  args.spec = *spec;
  args.keep = preserve ? d_keep.data() : nullptr;
  args.err = d_err.data();
  args.row_loss = d_loss.data();
  args.tile = tile_floats > 0 ? d_tile.data() : nullptr;
  args.keep_tile = tile_floats > 0 && preserve ? d_keep_tile.data() : nullptr;
  LLMC_RETURN_IF_ERROR(ForEachColumnBlock(cols, B, [&](int64_t i1, int64_t count) -> absl::Status {
    args.i1 = i1;
    args.count = count;
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::GptqBlock(args, stream));
    // With U = identity (the fallback) the products are exact zeros: nothing to subtract.
    if (factored && i1 + count < cols)
      LLMC_CUDA_STR_RETURN_IF_ERROR(linalg.TrailingUpdate(d_err.data(), rows, cols, i1, count, d_u.data(), w,
                                                          args.keep, d_tmp.data()));
    return absl::OkStatus();
  }));
  std::vector<double> row_loss(rows);
  LLMC_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(row_loss.data(), d_loss.data(), rows * sizeof(double), cudaMemcpyDeviceToHost, stream));
  phases.Mark("columns");

  // ---- back to the original column order, to the host ----
  if (!perm.empty())
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::PermuteColumns(d_work.data(), rows, cols, d_perm.data(), /*inverse=*/true, d_src.data(), stream));
  result.weight = TakeGptqResultStorage(options, static_cast<size_t>(n));
  if (pinned.ok()) {
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(*pinned, d_src.data(), weight_bytes, cudaMemcpyDeviceToHost, stream));
    LLMC_RETURN_IF_ERROR(ctx->Synchronize());
    ParallelCopy(result.weight.data(), *pinned, weight_bytes, copy_threads);
  } else {
    LLMC_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(result.weight.data(), d_src.data(), weight_bytes, cudaMemcpyDeviceToHost, stream));
    LLMC_RETURN_IF_ERROR(ctx->Synchronize());
  }
  phases.Mark("download");
  FinishGptqResult(row_loss, plan, col_group, quantizer, &result);
  return result;
}

}  // namespace llmc
