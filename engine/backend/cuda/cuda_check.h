// Error handling for CUDA calls in .cu files (which use no Abseil): LLMC_CUDA_TRY(expr) returns, from a function
// returning std::string, the failing call with file, line and CUDA's error string; "" means success.
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
