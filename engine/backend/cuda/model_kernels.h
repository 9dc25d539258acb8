// CUDA kernels of the decoder forward (fp32 activations). Plain C++ interface (no Abseil in .cu files).
// CPU references: engine/model/cpu_ops.h (RmsNorm, SwiGlu); tests/gpu/cuda_model_ops_test.cc compares them.
#pragma once

#include <cstdint>
#include <string>

namespace llmc::cuda {

// Device-pointer kernels, launched on the default stream. Return "" or the CUDA error with the failing call.
// out [rows, dim] = x [rows, dim] * rsqrt(mean(x^2) + eps) * weight [dim]. `out` may alias `x`.
std::string RmsNormDevice(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out);
// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i]. `out` may alias either input.
std::string SwiGluDevice(const float* gate, const float* up, int64_t n, float* out);

// Host-memory conveniences for tests: copy in, run, copy out, free.
std::string RmsNormHost(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out);
std::string SwiGluHost(const float* gate, const float* up, int64_t n, float* out);

}  // namespace llmc::cuda
