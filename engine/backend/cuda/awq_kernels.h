// CUDA kernels of AWQ's grid search (engine/algo/awq.h; the host API is engine/calib/cuda_awq_loss.h): the trial
// weight Q(W diag(s)) diag(s)^-1 of an integer group scheme and the squared-error sum of the loss. CPU reference:
// AwqTrialWeight (engine/algo/awq.cc, through QuantizeWeight / DequantizeWeight). Plain C++ interface (no Abseil):
// functions return "" or a message naming the failing call. Device pointers; launches on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "engine/backend/cuda/gptq_kernels.h"

namespace llmc::cuda {

// out [rows, cols] = AwqTrialWeight(w, s) for an integer scheme (spec.kind == kInt) with groups of `group` columns
// (group == cols: per channel): per row and group, v = round(w * s) to spec.round (the product in fp64, as the
// host multiplies by fp64 scales), the range of v widened to 0, compressed-tensors' scale and zero point in the
// model dtype (symmetric: max(|min|, max) / ((qmax - qmin) / 2); asymmetric: (max - min) / (qmax - qmin) and
// zp = round(clamp(qmin - min / scale, qmin, qmax)); a zero scale becomes `eps`), FakeQuantValue(v), then
// round(q / s) (fp64 division). w [rows, cols] fp32, s [cols] fp64, out [rows, cols] fp32 (must not alias w).
// Needs cols % group == 0. Bit-identical to the host reference (explicitly rounded operations).
std::string AwqTrialWeightDevice(const float* w, int64_t rows, int64_t cols, int64_t group, const double* s,
                                 const FakeQuantSpec& spec, float eps, float* out, cudaStream_t stream);

// Partial sums AwqSquaredErrorSum needs: this many doubles of device scratch.
constexpr int kAwqPartials = 1024;

// *host_sum = sum over i < n of (a[i] - b[i])^2 in fp64, reduced in a fixed order (deterministic). `partials`:
// kAwqPartials device doubles. Synchronizes the stream (returns a host value).
std::string AwqSquaredErrorSum(const float* a, const float* b, int64_t n, double* partials, double* host_sum,
                               cudaStream_t stream);

}  // namespace llmc::cuda
