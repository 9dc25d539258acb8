#include "engine/model/cuda_context.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/backend/cuda/rtn_kernels.h"
#include "engine/model/cuda_status.h"

namespace llmc {

absl::Status DeviceAllocError(cudaError_t err, uint64_t bytes, absl::string_view what) {
  cudaGetLastError();  // clear the sticky-free error state of a failed allocation
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  std::string msg = absl::StrCat("cudaMalloc of ", FormatBytes(bytes), " for ", what, " failed: ",
                                 cudaGetErrorString(err), " (", FormatBytes(free_b), " free of ",
                                 FormatBytes(total_b), ")");
  if (err == cudaErrorMemoryAllocation)
    return absl::ResourceExhaustedError(
        absl::StrCat(msg, "; free GPU memory, evaluate fewer windows at a time or use --device cpu"));
  return absl::InternalError(msg);
}

absl::StatusOr<std::unique_ptr<CudaContext>> CudaContext::Create(int device) {
  std::string why;
  const int count = cuda::DeviceCount(&why);
  if (count == 0)
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device is usable (", why, "); run on a machine with an NVIDIA GPU or use --device cpu"));
  if (device < 0 || device >= count)
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " does not exist; this machine has ", count,
                                                   " (0..", count - 1, ")"));
  std::unique_ptr<CudaContext> ctx(new CudaContext());
  ctx->device_ = device;
  LLMC_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cudaDeviceProp prop;
  LLMC_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  ctx->name_ = absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ", ", FormatBytes(prop.totalGlobalMem), ")");
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&ctx->stream_, cudaStreamNonBlocking));
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&ctx->upload_stream_, cudaStreamNonBlocking));
  ctx->blas_ = std::make_unique<cuda::Blas>();
  LLMC_CUDA_STR_RETURN_IF_ERROR(ctx->blas_->Init(ctx->stream_));
  return ctx;
}

CudaContext::~CudaContext() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (upload_stream_ != nullptr) cudaStreamSynchronize(upload_stream_);
  blas_.reset();
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
  if (upload_stream_ != nullptr) cudaStreamDestroy(upload_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaContext::Synchronize() {
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<void*> CudaContext::PinnedStaging(size_t bytes) {
  if (bytes <= pinned_bytes_) return pinned_;
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(upload_stream_));
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
  pinned_ = nullptr;
  pinned_bytes_ = 0;
  if (cudaHostAlloc(&pinned_, bytes, cudaHostAllocDefault) != cudaSuccess) {
    cudaGetLastError();  // clear the failed allocation's error, so later calls do not report it
    pinned_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat("cannot pin ", bytes, " bytes of host memory for GPU copies"));
  }
  pinned_bytes_ = bytes;
  return pinned_;
}

absl::StatusOr<DeviceHiddenStates> UploadHiddenStates(const HiddenStates& x, CudaContext* ctx) {
  DeviceHiddenStates d;
  d.num_seqs = x.num_seqs;
  d.seq_len = x.seq_len;
  d.hidden = x.hidden;
  if (static_cast<int64_t>(x.data.size()) != x.tokens() * x.hidden)
    return absl::InvalidArgumentError(absl::StrCat("UploadHiddenStates: ", x.data.size(), " values for ",
                                                   x.tokens(), " tokens of width ", x.hidden));
  LLMC_ASSIGN_OR_RETURN(d.data, DeviceArray<float>::Create(std::max<int64_t>(1, x.tokens() * x.hidden),
                                                           "hidden states"));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d.data.data(), x.data.data(), x.data.size() * sizeof(float),
                                            cudaMemcpyHostToDevice, ctx->stream()));
  LLMC_RETURN_IF_ERROR(ctx->Synchronize());
  return d;
}

absl::Status DownloadHiddenStates(const DeviceHiddenStates& x, CudaContext* ctx, HiddenStates* out) {
  out->num_seqs = x.num_seqs;
  out->seq_len = x.seq_len;
  out->hidden = x.hidden;
  out->data.resize(static_cast<size_t>(x.tokens() * x.hidden));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->data.data(), x.data.data(), out->data.size() * sizeof(float),
                                            cudaMemcpyDeviceToHost, ctx->stream()));
  return ctx->Synchronize();
}

}  // namespace llmc
