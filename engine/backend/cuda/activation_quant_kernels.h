// CUDA fake quantization of activations (Linear inputs/outputs, kv cache) with compressed-tensors' arithmetic.
// Plain C++ interface (no Abseil in .cu files). CPU reference: engine/quant/activation_quantizer.h (Apply), which
// defines every rounding; tests/gpu/cuda_activation_quant_test.cc compares the two bit for bit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace llmc::cuda {

inline constexpr int kMaxStaticActivationScales = 128;

// What ActivationQuantizer holds, as plain values.
struct ActivationQuantParams {
  int kind = 0;   // 0: int, 1: fp8 e4m3, 2: NVFP4
  int round = 1;  // the model dtype every step rounds to: 0 fp32, 1 bf16, 2 fp16
  bool dynamic = true;
  int64_t cols = 0;        // values per row
  int64_t group_cols = 0;  // values sharing one scale within a row (divides cols)
  float qmin = 0, qmax = 0;
  float global_scale = 0;  // NVFP4
  float dtype_eps = 0;     // torch.finfo(model dtype).eps: replaces a zero int/fp8 dynamic scale
  int num_static = 0;      // static scales: 1 (per tensor) or cols / group_cols (per head)
  float static_scales[kMaxStaticActivationScales] = {};
};

// y [rows, p.cols] = fake-quantized x [rows, p.cols] (device pointers; y may alias x). Validates p, launches on
// `stream` without synchronizing; returns "" or the error naming the failing call.
std::string FakeQuantActivationsDevice(const float* x, float* y, int64_t rows, const ActivationQuantParams& p,
                                       cudaStream_t stream = nullptr);

// Host-memory convenience for tests: copy in, run, copy out, free.
std::string FakeQuantActivationsHost(const float* x, float* y, int64_t rows, const ActivationQuantParams& p);

}  // namespace llmc::cuda
