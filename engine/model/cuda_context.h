// The device side of the CUDA model runtime: a context (device, streams, cuBLAS), owned device arrays, and hidden
// states that live on the device between blocks.
//
//   LLMC_ASSIGN_OR_RETURN(auto ctx, CudaContext::Create());           // device 0
//   LLMC_ASSIGN_OR_RETURN(auto x, UploadHiddenStates(host_x, ctx.get()));
//   ... CudaBlockRunner::Run(..., &x) ...
//   LLMC_RETURN_IF_ERROR(DownloadHiddenStates(x, ctx.get(), &host_x));
//
// Not thread-safe: a context and everything made with it are used from one thread at a time.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend/cuda/blas.h"
#include "engine/model/decoder_block.h"

namespace llmc {

// A device allocation of `size()` elements of T (cudaMalloc; uninitialized). Move-only; freed on destruction
// (cudaFree synchronizes the device).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  ~DeviceArray() { Reset(); }
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      Reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  // Allocates n elements. `what` names the buffer in the error (RESOURCE_EXHAUSTED with the bytes asked for and
  // the device's free memory, and what to do).
  static absl::StatusOr<DeviceArray> Create(int64_t n, absl::string_view what);
  // Makes the array hold at least n elements, reallocating (contents lost) when it is smaller.
  absl::Status Reserve(int64_t n, absl::string_view what);

  T* data() { return p_; }
  const T* data() const { return p_; }
  int64_t size() const { return n_; }
  uint64_t bytes() const { return static_cast<uint64_t>(n_) * sizeof(T); }
  void Reset();

 private:
  T* p_ = nullptr;
  int64_t n_ = 0;
};

// RESOURCE_EXHAUSTED (or INTERNAL) for a failed cudaMalloc of `bytes` for `what`.
absl::Status DeviceAllocError(cudaError_t err, uint64_t bytes, absl::string_view what);

template <typename T>
absl::StatusOr<DeviceArray<T>> DeviceArray<T>::Create(int64_t n, absl::string_view what) {
  DeviceArray<T> a;
  absl::Status s = a.Reserve(n, what);
  if (!s.ok()) return s;
  return a;
}

template <typename T>
absl::Status DeviceArray<T>::Reserve(int64_t n, absl::string_view what) {
  if (n <= n_) return absl::OkStatus();
  Reset();
  void* p = nullptr;
  const uint64_t bytes = static_cast<uint64_t>(n) * sizeof(T);
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) return DeviceAllocError(err, bytes, what);
  p_ = static_cast<T*>(p);
  n_ = n;
  return absl::OkStatus();
}

template <typename T>
void DeviceArray<T>::Reset() {
  if (p_ != nullptr) cudaFree(p_);
  p_ = nullptr;
  n_ = 0;
}

// One device, a compute stream, an upload stream (both non-blocking) and a cuBLAS handle on the compute stream.
class CudaContext {
 public:
  // Selects `device`. FAILED_PRECONDITION when there is no usable CUDA device (the message says why and to use
  // --device cpu), INVALID_ARGUMENT when `device` is out of range.
  static absl::StatusOr<std::unique_ptr<CudaContext>> Create(int device = 0);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  // "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
  const std::string& device_name() const { return name_; }
  cudaStream_t stream() const { return stream_; }
  cudaStream_t upload_stream() const { return upload_stream_; }
  cuda::Blas* blas() { return blas_.get(); }
  // Waits for the compute stream; returns the first asynchronous error, if any.
  absl::Status Synchronize();
  // A pinned host buffer of at least `bytes` (cudaHostAlloc; grown on demand, kept until the context goes):
  // copies between it and the device run at the bus's rate instead of through the driver's staging of pageable
  // memory. Growing waits for both streams (queued copies may still use the old buffer). The contents belong to
  // the caller until its next call. RESOURCE_EXHAUSTED when the host cannot pin that much (callers then copy
  // from pageable memory).
  absl::StatusOr<void*> PinnedStaging(size_t bytes);

 private:
  CudaContext() = default;
  int device_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t upload_stream_ = nullptr;
  std::unique_ptr<cuda::Blas> blas_;  // destroyed before the streams
  void* pinned_ = nullptr;            // PinnedStaging's buffer, pinned_bytes_ long
  size_t pinned_bytes_ = 0;
};

// Hidden states on the device, with HiddenStates' layout: [num_seqs * seq_len, hidden] fp32, sequence-major.
struct DeviceHiddenStates {
  int64_t num_seqs = 0;
  int64_t seq_len = 0;
  int64_t hidden = 0;
  DeviceArray<float> data;

  int64_t tokens() const { return num_seqs * seq_len; }
  float* row(int64_t t) { return data.data() + t * hidden; }
  const float* row(int64_t t) const { return data.data() + t * hidden; }
};

// Copies host hidden states to a new device array (on the compute stream; returns when the copy is done).
absl::StatusOr<DeviceHiddenStates> UploadHiddenStates(const HiddenStates& x, CudaContext* ctx);
// Copies device hidden states to `out` (resized), after everything queued on the compute stream.
absl::Status DownloadHiddenStates(const DeviceHiddenStates& x, CudaContext* ctx, HiddenStates* out);

}  // namespace llmc
