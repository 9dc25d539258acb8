// CUDA kernels of the decoder forward (fp32 activations). Plain C++ interface (no Abseil in .cu files); the model
// runtime wraps the returned strings into absl::Status (engine/model/cuda_status.h).
// CPU references: engine/model/cpu_ops.h (RmsNorm, SwiGlu, ApplyRotary, TokenNll; the residual and bias adds of
// decoder_block.cc / LinearForward). tests/gpu/cuda_model_ops_test.cc and cuda_decoder_kernels_test.cc compare.
//
// Every `...Device` function takes device pointers, validates its sizes, launches on `stream` (nullptr: the
// legacy default stream) without synchronizing, and returns "" or the CUDA error naming the failing call.
// Shapes are row-major, written [rows, cols].
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace llmc::cuda {

// The next three also write `out_bf16`, when not null, with the bf16 copy of every output value (FloatToBf16Device's
// rounding: the same bits as converting `out` afterwards, without reading it again). `out` may then be null, when
// only the bf16 copy is needed (a bf16 GEMM's input); one of the two must be given.
//
// out [rows, dim] = x [rows, dim] * rsqrt(mean(x^2) + eps) * weight [dim]. `out` may alias `x`. The sum of
// squares is taken in double, as the CPU reference.
std::string RmsNormDevice(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out,
                          cudaStream_t stream = nullptr, uint16_t* out_bf16 = nullptr);
// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i]. `out` may alias either input.
std::string SwiGluDevice(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream = nullptr,
                         uint16_t* out_bf16 = nullptr);

// out[i] = gelu_tanh(gate[i]) * up[i] (PyTorch's gelu(approximate="tanh") in fp32, as the CPU GeluTanhGlu).
// `out` may alias either input.
std::string GeluTanhGluDevice(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream = nullptr,
                              uint16_t* out_bf16 = nullptr);
// x[i] = cap * tanh(x[i] / cap) for n elements (logit softcapping, as the CPU Softcap). cap > 0.
std::string SoftcapDevice(float* x, int64_t n, float cap, cudaStream_t stream = nullptr);

// Rotary embedding in place on x [num_seqs * seq_len, heads * head_dim] (HF rotate_half: dimension i pairs with
// i + head_dim/2); token t of each sequence has position t. cos and sin are the RopeTable's [positions,
// head_dim/2] tables, with at least seq_len positions. Bit-identical to the CPU ApplyRotary (no FMA contraction).
// With rotary_dim > 0 (partial rotary) only the first rotary_dim dimensions of each head rotate (pairs i and
// i + rotary_dim/2) and the tables are [positions, rotary_dim/2]. interleaved: pairs 2i and 2i + 1 (Llama 4,
// transformers' complex form; rotary_dim must be head_dim).
std::string RopeDevice(float* x, int64_t num_seqs, int64_t seq_len, int64_t heads, int64_t head_dim,
                       const float* cos, const float* sin, cudaStream_t stream = nullptr, int64_t rotary_dim = 0,
                       bool interleaved = false);
// x [rows, cols]: row r multiplied by scales[r % period] (each product rounded to fp32): Llama 4's per-position
// query temperature on no-rope layers, with period = seq_len.
std::string ScaleRowsPeriodicDevice(float* x, int64_t rows, int64_t cols, const float* scales, int64_t period,
                                    cudaStream_t stream = nullptr);

// x[i] += y[i] for n elements (the residual adds).
std::string AddDevice(float* x, const float* y, int64_t n, cudaStream_t stream = nullptr);
// y [rows, cols] += bias [cols] on every row.
std::string AddBiasDevice(float* y, int64_t rows, int64_t cols, const float* bias, cudaStream_t stream = nullptr);

// nll[r] = -log softmax(logits[r])[targets[r]] for logits [rows, vocab] (fp32, max-shifted in fp32, the
// normalizer summed in double, as TokenNll). targets [rows] int32 in [0, vocab) (checked: out of range gives NaN).
std::string TokenNllDevice(const float* logits, int64_t rows, int64_t vocab, const int32_t* targets, double* nll,
                           cudaStream_t stream = nullptr);

// Mixture-of-experts dispatch (CPU references: GatherRows / ScatterAddScaledRows in engine/model/cpu_ops.h).
// dst [n, cols] = src[rows[i]] for i < n (rows: device int32 indices into src), times scales[i] when scales is not
// null (Llama 4 scales each routed token's expert input by its router weight; the product rounded to fp32).
std::string GatherRowsDevice(const float* src, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                             cudaStream_t stream = nullptr, const float* scales = nullptr);
// dst[dst_rows[i]] += src[src_rows ? src_rows[i] : i] * scales[i] for i < n, each row of `cols` values (the product
// rounded to fp32, then added, as the CPU). dst_rows must be distinct (one expert's tokens).
std::string ScatterAddScaledRowsDevice(const float* src, const int32_t* src_rows, const int32_t* dst_rows,
                                       const float* scales, int64_t n, int64_t cols, float* dst,
                                       cudaStream_t stream = nullptr);
// out[i] = bf16(in[i]) (round to nearest even; bf16 bit patterns as uint16).
std::string FloatToBf16Device(const float* in, int64_t n, uint16_t* out, cudaStream_t stream = nullptr);
// out[i] = float(in[i]) for bf16 bit patterns (exact).
std::string Bf16ToFloatDevice(const uint16_t* in, int64_t n, float* out, cudaStream_t stream = nullptr);
// Token embedding on the device: out[i, :] = float(table[ids[i], :]) * scale (the multiply skipped when scale is 1),
// n rows of `cols` values; the table [rows, cols] in `dtype` (bit patterns; conversions exact), ids already checked
// to lie in [0, rows). Bit-identical to CausalLm::Embed.
enum class TableDType { kF32, kBF16, kF16 };
std::string EmbedRowsDevice(const void* table, TableDType dtype, int64_t cols, const int32_t* ids, int64_t n,
                            float scale, float* out, cudaStream_t stream = nullptr);

// *flag |= 1 when any of x[0, n) is NaN or +-Inf (flag is a device word the caller zeroes and reads back).
std::string FlagNonFiniteDevice(const float* x, int64_t n, unsigned* flag, cudaStream_t stream = nullptr);

// Host-memory conveniences for tests: copy in, run, copy out, free.
std::string RmsNormHost(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out);
std::string SwiGluHost(const float* gate, const float* up, int64_t n, float* out);
std::string AnyNonFiniteHost(const float* x, int64_t n, bool* any);
// EmbedRowsDevice over a host table of `rows` rows (element size from dtype) and host ids.
std::string EmbedRowsHost(const void* table, TableDType dtype, int64_t rows, int64_t cols, const int32_t* ids,
                          int64_t n, float scale, float* out);

}  // namespace llmc::cuda
