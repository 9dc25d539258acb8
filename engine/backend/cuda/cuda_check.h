// Error handling for CUDA calls in .cu files (which use no Abseil): LLMC_CUDA_TRY(expr) returns, from a function
// returning std::string, the failing call with file, line and CUDA's error string; "" means success.
// LLMC_CUBLAS_TRY does the same for cuBLAS calls, LLMC_TRY_STR for our own functions returning std::string.
#pragma once

#include <cuda_runtime.h>

#include <string>

#define LLMC_CUDA_TRY(expr)                                                                              \
  do {                                                                                                   \
    cudaError_t err_ = (expr);                                                                           \
    if (err_ != cudaSuccess)                                                                             \
      return std::string(#expr) + " failed at " __FILE__ ":" + std::to_string(__LINE__) + ": " +         \
             cudaGetErrorString(err_);                                                                   \
  } while (0)

// cuBLAS status names need cublas_v2.h: only files that include it use this macro.
#define LLMC_CUBLAS_TRY(expr)                                                                            \
  do {                                                                                                   \
    cublasStatus_t st_ = (expr);                                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      return std::string(#expr) + " failed at " __FILE__ ":" + std::to_string(__LINE__) + ": " +         \
             cublasGetStatusName(st_) + " (" + cublasGetStatusString(st_) + ")";                        \
  } while (0)

#define LLMC_TRY_STR(expr)                  \
  do {                                      \
    std::string e_ = (expr);                \
    if (!e_.empty()) return e_;             \
  } while (0)
