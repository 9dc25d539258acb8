#include "engine/calib/cuda_block_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/block_view.h"
#include "engine/algo/cuda_gptq.h"
#include "engine/calib/cuda_awq_loss.h"
#include "engine/model/cuda_block_runner.h"
#include "engine/model/cuda_context.h"

namespace llmc {
namespace {

// An input group's X^T X on the device, scaled as it accumulates (H = 2/N sum x x^T), and its sample count.
struct CudaHessian final : DeviceHessian {
  DeviceArray<float> xtx;  // [cols, cols]
  int64_t samples = 0;
};

// Calibration on the GPU: Hessian sums accumulate on the device (cuBLAS SYRK); every other statistic goes through
// the host hooks (a copy of the input per call), which only the smoothing and static-scale algorithms need.
class DeviceCalibHooks : public CudaLinearHooks {
 public:
  // `alpha` scales every X^T X added (2/N for the Hessian of N calibration samples).
  DeviceCalibHooks(const Wants& wants, CalibHooks* host, CudaContext* ctx, float alpha, cuda::GemmPrecision precision)
      : wants_(wants), host_(host), ctx_(ctx), alpha_(alpha), precision_(precision) {
    adapter_ = std::make_unique<HostLinearHooksAdapter>(host);
    need_host_ = !wants.row_norm.empty() || !wants.channel_max.empty() || !wants.range.empty() ||
                 !wants.channel_mean.empty() || !wants.capture.empty() || wants.kv ||
                 (!wants.hessian.empty() && !wants.device_hessian);
  }
  void set_seq_len(int64_t t) { seq_len_ = t; }
  bool SeeAllExperts() const override { return host_->SeeAllExperts(); }

  absl::Status OnDeviceInput(const LinearWeight& w, const float* input, int64_t tokens, cudaStream_t stream) override {
    const std::string group = InputGroup(w.name);
    const bool repeat = input == last_ptr_ && group == last_group_;
    last_ptr_ = input;
    last_group_ = group;
    if (!repeat && wants_.device_hessian && wants_.hessian.count(group)) {
      GroupStats& s = host_->stats()[group];
      const int64_t cols = w.in_features;
      if (!s.device_hessian) {
        auto h = std::make_unique<CudaHessian>();
        LLMC_RETURN_IF_ERROR(h->xtx.Reserve(cols * cols, absl::StrCat("Hessian of ", group)));
        if (cudaMemsetAsync(h->xtx.data(), 0, cols * cols * sizeof(float), stream) != cudaSuccess)
          return absl::InternalError("cudaMemsetAsync failed");
        s.device_hessian = std::move(h);
      }
      auto* h = static_cast<CudaHessian*>(s.device_hessian.get());
      std::string err = ctx_->blas()->AccumulateXtX(input, tokens, cols, alpha_, h->xtx.data(), precision_);
      if (!err.empty()) return absl::InternalError(absl::StrCat(w.name, ": ", err));
      h->samples += seq_len_ > 0 ? std::max<int64_t>(1, tokens / seq_len_) : 1;
      s.tokens += tokens;
    }
    if (need_host_) return adapter_->OnDeviceInput(w, input, tokens, stream);
    return absl::OkStatus();
  }

 private:
  const Wants& wants_;
  CalibHooks* host_;
  CudaContext* ctx_;
  float alpha_;
  cuda::GemmPrecision precision_;
  std::unique_ptr<HostLinearHooksAdapter> adapter_;
  bool need_host_ = false;
  int64_t seq_len_ = 0;
  const float* last_ptr_ = nullptr;
  std::string last_group_;
};

class CudaBlockBackend final : public BlockBackend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBlockBackend>> Create(const BlockBackendOptions& options, CausalLm* lm,
                                                                   std::vector<HiddenStates> batches) {
    std::unique_ptr<CudaBlockBackend> b(new CudaBlockBackend(options.num_samples));
    LLMC_ASSIGN_OR_RETURN(b->cuda_, CudaContext::Create());
    cuda::GemmPrecision prec = cuda::GemmPrecision::kTf32;
    if (options.gemm_precision == "fp32") prec = cuda::GemmPrecision::kFp32;
    else if (options.gemm_precision == "bf16") prec = cuda::GemmPrecision::kBf16;
    else if (!options.gemm_precision.empty() && options.gemm_precision != "tf32")
      return absl::InvalidArgumentError(absl::StrCat("GEMM precision '", options.gemm_precision, "': use fp32, tf32 or bf16"));
    LLMC_ASSIGN_OR_RETURN(b->dweights_, CudaBlockWeights::Create(lm->spec(), prec, b->cuda_.get()));
    b->awq_ = CreateCudaAwqLossFactory(b->cuda_.get(), prec);
    CudaBlockRunnerOptions ro;
    ro.max_chunk_tokens = std::max<int64_t>(options.max_chunk_tokens, 8192);
    LLMC_ASSIGN_OR_RETURN(b->runner_, CudaBlockRunner::Create(lm->spec(), b->cuda_.get(), ro));
    int64_t max_tokens = 0;
    for (HiddenStates& h : batches) {
      LLMC_ASSIGN_OR_RETURN(DeviceHiddenStates d, UploadHiddenStates(h, b->cuda_.get()));
      max_tokens = std::max(max_tokens, h.tokens());
      b->dbatches_.push_back(std::move(d));
      h.data.clear();
      h.data.shrink_to_fit();
    }
    LLMC_RETURN_IF_ERROR(b->dscratch_.data.Reserve(max_tokens * lm->spec().hidden_size, "calibration activations"));
    b->dscratch_.hidden = lm->spec().hidden_size;
    return b;
  }

  absl::Status Calibrate(const DecoderBlock& block, const Wants& wants, CalibHooks* hooks) override {
    hooks->set_on_device(true);
    DeviceCalibHooks dh(wants, hooks, cuda_.get(), 2.0f / static_cast<float>(num_samples_), dweights_->precision());
    LLMC_RETURN_IF_ERROR(dweights_->Upload(block));
    for (const DeviceHiddenStates& b : dbatches_) {
      dscratch_.num_seqs = b.num_seqs;
      dscratch_.seq_len = b.seq_len;
      if (cudaMemcpyAsync(dscratch_.data.data(), b.data.data(), b.tokens() * b.hidden * sizeof(float),
                          cudaMemcpyDeviceToDevice, cuda_->stream()) != cudaSuccess)
        return absl::InternalError("device copy of the calibration activations failed");
      hooks->set_seq_len(b.seq_len);
      dh.set_seq_len(b.seq_len);
      LLMC_RETURN_IF_ERROR(runner_->Run(dweights_.get(), &dscratch_, &dh));
    }
    return cuda_->Synchronize();
  }

  absl::Status Propagate(const DecoderBlock& block) override {
    LLMC_RETURN_IF_ERROR(dweights_->Upload(block));
    for (DeviceHiddenStates& b : dbatches_) LLMC_RETURN_IF_ERROR(runner_->Run(dweights_.get(), &b));
    return cuda_->Synchronize();
  }

  // On the GPU when the Hessian is there and the scheme is supported; from a host copy of it otherwise.
  absl::StatusOr<GptqResult> Gptq(const std::string& module, const float* weight, int64_t rows, int64_t cols,
                                  const GroupStats* st, GroupQuantizer* q, const GptqOptions& go) override {
    if (!st || !st->device_hessian) return BlockBackend::Gptq(module, weight, rows, cols, st, q, go);
    // The device sum holds H = 2/N sum x x^T already (scaled as it accumulated).
    const auto* h = static_cast<const CudaHessian*>(st->device_hessian.get());
    if (CudaGptqSupports(*q))
      return CudaGptqQuantize(module, weight, rows, cols, h->xtx.data(), h->samples, q, go, cuda_.get());
    std::vector<float> host(cols * cols);
    if (cudaMemcpy(host.data(), h->xtx.data(), host.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
      return absl::InternalError("cannot copy a Hessian from the device");
    return GptqQuantize(module, weight, rows, cols, host.data(), h->samples, q, go);
  }

  // NCCL sums the device Hessian in place; a host communicator (Gloo) through a host copy.
  absl::Status ReduceDeviceStats(GroupStats* st, Communicator* comm) override {
    if (!st->device_hessian || comm->size() == 1) return absl::OkStatus();
    auto* h = static_cast<CudaHessian*>(st->device_hessian.get());
    LLMC_RETURN_IF_ERROR(cuda_->Synchronize());
    const size_t n = h->xtx.size();
    if (comm->device_memory()) {
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(h->xtx.data(), n)));
    } else {
      std::vector<float> host(n);
      if (cudaMemcpy(host.data(), h->xtx.data(), n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
        return absl::InternalError("cannot copy a Hessian from the device");
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(host)));
      if (cudaMemcpy(h->xtx.data(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
        return absl::InternalError("cannot copy a Hessian to the device");
    }
    double samples = static_cast<double>(h->samples);
    LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(&samples, 1)));
    h->samples = static_cast<int64_t>(samples);
    return absl::OkStatus();
  }

  bool runs_off_host() const override { return true; }

  AwqDeviceLossFactory* awq_device_loss() override { return awq_.get(); }

  void ReportBlock(nlohmann::json* blk) override {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      peak_device_bytes_ = std::max<uint64_t>(peak_device_bytes_, total_b - free_b);
      (*blk)["device_used_bytes"] = total_b - free_b;
    }
  }

  void Report(nlohmann::json* j) const override {
    (*j)["device_name"] = cuda_->device_name();
    (*j)["peak_device_used_bytes"] = peak_device_bytes_;
  }

 private:
  explicit CudaBlockBackend(int64_t num_samples) : num_samples_(num_samples) {}

  int64_t num_samples_;
  std::unique_ptr<CudaContext> cuda_;
  std::unique_ptr<CudaBlockWeights> dweights_;
  std::unique_ptr<CudaBlockRunner> runner_;
  std::unique_ptr<AwqDeviceLossFactory> awq_;
  std::vector<DeviceHiddenStates> dbatches_;
  DeviceHiddenStates dscratch_;
  uint64_t peak_device_bytes_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateCudaBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                     std::vector<HiddenStates> batches) {
  LLMC_ASSIGN_OR_RETURN(std::unique_ptr<CudaBlockBackend> b, CudaBlockBackend::Create(options, lm, std::move(batches)));
  return std::unique_ptr<BlockBackend>(std::move(b));
}

}  // namespace llmc
