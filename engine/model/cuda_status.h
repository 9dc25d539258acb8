// absl::Status from CUDA results, for the C++ (non-.cu) side of the CUDA model runtime:
//   LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));       // a cudaError_t
//   LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RopeDevice(...));   // the "" / message strings of engine/backend/cuda
// A failed allocation becomes RESOURCE_EXHAUSTED, anything else INTERNAL; the message names the call, file and line.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace llmc {

inline absl::Status CudaErrorToStatus(cudaError_t err, const char* expr, const char* file, int line) {
  std::string msg = absl::StrCat(expr, " failed at ", file, ":", line, ": ", cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

inline absl::Status CudaMessageToStatus(const std::string& msg) {
  if (msg.empty()) return absl::OkStatus();
  if (msg.find("out of memory") != std::string::npos) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace llmc

#define LLMC_CUDA_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                   \
    cudaError_t llmc_cuda_err_ = (expr);                                                 \
    if (llmc_cuda_err_ != cudaSuccess)                                                   \
      return ::llmc::CudaErrorToStatus(llmc_cuda_err_, #expr, __FILE__, __LINE__);       \
  } while (0)

#define LLMC_CUDA_STR_RETURN_IF_ERROR(expr)                                              \
  do {                                                                                   \
    std::string llmc_cuda_msg_ = (expr);                                                 \
    if (!llmc_cuda_msg_.empty()) return ::llmc::CudaMessageToStatus(llmc_cuda_msg_);     \
  } while (0)
