// CUDA kernels for round-to-nearest weight quantization. Plain C++ interface (no Abseil in .cu files);
// cuda_backend.h wraps it into absl::Status. CPU reference: engine/quant/weight_quantizer.cc.
#pragma once

#include <cstdint>
#include <string>

namespace llmc::cuda {

// Number of visible CUDA devices; 0 when there is no device or driver. `error` gets the reason then.
int DeviceCount(std::string* error);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for device 0.
std::string DeviceName();

// Symmetric/asymmetric integer group quantization of a bf16 weight [rows, cols] (row-major, host memory),
// bit-exact with the compressed-tensors library (arithmetic in bf16). group = cols for per-channel.
// Writes q [rows, cols] int8, scales [rows, cols/group] bf16 and zero points [rows, cols/group] int8 (asym).
// Returns "" on success or an error message with the failing CUDA call.
std::string QuantizeIntGroupBF16(const uint16_t* weight, int64_t rows, int64_t cols, int64_t group, int num_bits,
                                 bool symmetric, int8_t* q, uint16_t* scales, int8_t* zero_points,
                                 float* kernel_ms);

}  // namespace llmc::cuda
