#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/backend/cuda/cuda_check.h"
#include "engine/backend/cuda/model_kernels.h"

namespace llmc::cuda {

namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n, int threads = kThreads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// bf16(f), round to nearest even; a NaN stays a quiet NaN (FloatToBf16Device's arithmetic, shared by every kernel
// that also writes a bf16 copy of its output).
__device__ __forceinline__ uint16_t Bf16Rne(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Stores y into out[i] and its bf16 copy into out_bf16[i], each when not null.
__device__ __forceinline__ void Store(float* out, uint16_t* out_bf16, int64_t i, float y) {
  if (out != nullptr) out[i] = y;
  if (out_bf16 != nullptr) out_bf16[i] = Bf16Rne(y);
}

// 1 / sqrt(mean of squares + eps) of a row, from each thread's part `ss` of its sum of squares (in double), summed
// over the block of kThreads threads; every thread gets the value.
__device__ float BlockInvRms(double ss, int64_t dim, float eps) {
  __shared__ double part[kThreads];
  part[threadIdx.x] = ss;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  return static_cast<float>(1.0 / sqrt(static_cast<double>(static_cast<float>(part[0] / dim)) + eps));
}

// The bf16 copies of four values, as one 8-byte store at p (8-byte aligned).
__device__ __forceinline__ void StoreBf16x4(uint16_t* p, float4 y) {
  ushort4 b;
  b.x = Bf16Rne(y.x);
  b.y = Bf16Rne(y.y);
  b.z = Bf16Rne(y.z);
  b.w = Bf16Rne(y.w);
  *reinterpret_cast<ushort4*>(p) = b;
}

// One block per row: sum of squares in double (as the CPU reference), then the scaled product.
__global__ void RmsNormKernel(const float* __restrict__ x, int64_t dim, const float* __restrict__ w, float eps,
                              float* out, uint16_t* out_bf16) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  const float inv = BlockInvRms(ss, dim, eps);
  float* o = out == nullptr ? nullptr : out + r * dim;
  uint16_t* ob = out_bf16 == nullptr ? nullptr : out_bf16 + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) Store(o, ob, i, __fmul_rn(w[i], __fmul_rn(xr[i], inv)));
}

// RmsNormKernel with 16-byte loads and stores (8-byte for the bf16 copy): dim a multiple of 4, x, w and out
// 16-byte aligned, out_bf16 8-byte aligned.
__global__ void RmsNormKernel4(const float* __restrict__ x, int64_t dim, const float* __restrict__ w, float eps,
                               float* out, uint16_t* out_bf16) {
  const int64_t r = blockIdx.x, quads = dim / 4;
  const float4* xr = reinterpret_cast<const float4*>(x + r * dim);
  double ss = 0;
  for (int64_t i = threadIdx.x; i < quads; i += blockDim.x) {
    const float4 v = xr[i];
    ss += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
          static_cast<double>(v.w) * v.w;
  }
  const float inv = BlockInvRms(ss, dim, eps);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  for (int64_t i = threadIdx.x; i < quads; i += blockDim.x) {
    const float4 v = xr[i], g = w4[i];
    const float4 y = make_float4(__fmul_rn(g.x, __fmul_rn(v.x, inv)), __fmul_rn(g.y, __fmul_rn(v.y, inv)),
                                 __fmul_rn(g.z, __fmul_rn(v.z, inv)), __fmul_rn(g.w, __fmul_rn(v.w, inv)));
    if (out != nullptr) reinterpret_cast<float4*>(out + r * dim)[i] = y;
    if (out_bf16 != nullptr) StoreBf16x4(out_bf16 + r * dim + 4 * i, y);
  }
}

// One warp per row, for short rows (q/k norms over head_dim: many rows of 64-256 values).
__global__ void RmsNormWarpKernel(const float* __restrict__ x, int64_t rows, int64_t dim, const float* __restrict__ w,
                                  float eps, float* out, uint16_t* out_bf16) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float* xr = x + r * dim;
  double ss = 0;
  for (int64_t i = lane; i < dim; i += 32) ss += static_cast<double>(xr[i]) * xr[i];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(static_cast<float>(ss / dim)) + eps));
  float* o = out == nullptr ? nullptr : out + r * dim;
  uint16_t* ob = out_bf16 == nullptr ? nullptr : out_bf16 + r * dim;
  for (int64_t i = lane; i < dim; i += 32) Store(o, ob, i, __fmul_rn(w[i], __fmul_rn(xr[i], inv)));
}

__device__ __forceinline__ float SwiGluValue(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__device__ __forceinline__ float GeluTanhGluValue(float x, float u) {
  const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanhf(inner)) * u;
}

// out[i] = F(gate[i], up[i]), four values per thread through 16-byte loads and stores (the bf16 copy through
// 8-byte ones); the last thread also does the n % 4 values past the last group of four. Needs gate, up and out
// 16-byte aligned and out_bf16 8-byte aligned (the caller falls back to GluKernel otherwise).
template <float (*F)(float, float)>
__global__ void GluKernel4(const float* __restrict__ gate, const float* __restrict__ up, int64_t n, float* out,
                           uint16_t* out_bf16) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, quads = n / 4;
  if (q > quads) return;
  if (q < quads) {
    const float4 g = reinterpret_cast<const float4*>(gate)[q], u = reinterpret_cast<const float4*>(up)[q];
    const float4 y = make_float4(F(g.x, u.x), F(g.y, u.y), F(g.z, u.z), F(g.w, u.w));
    if (out != nullptr) reinterpret_cast<float4*>(out)[q] = y;
    if (out_bf16 != nullptr) StoreBf16x4(out_bf16 + 4 * q, y);
    return;
  }
  for (int64_t i = quads * 4; i < n; ++i) Store(out, out_bf16, i, F(gate[i], up[i]));
}

// One value per thread, for any alignment.
template <float (*F)(float, float)>
__global__ void GluKernel(const float* __restrict__ gate, const float* __restrict__ up, int64_t n, float* out,
                          uint16_t* out_bf16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) Store(out, out_bf16, i, F(gate[i], up[i]));
}

bool Aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

template <float (*F)(float, float)>
void LaunchGlu(const float* gate, const float* up, int64_t n, float* out, uint16_t* out_bf16, cudaStream_t stream) {
  if (Aligned(gate, 16) && Aligned(up, 16) && Aligned(out, 16) && Aligned(out_bf16, 8))
    GluKernel4<F><<<Blocks(n / 4 + 1), kThreads, 0, stream>>>(gate, up, n, out, out_bf16);
  else
    GluKernel<F><<<Blocks(n), kThreads, 0, stream>>>(gate, up, n, out, out_bf16);
}

__global__ void SoftcapKernel(float* x, int64_t n, float cap) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  x[i] = tanhf(x[i] / cap) * cap;
}

// One thread per (token, head, i < half). --fmad=false keeps a*c - b*s as two rounded products and a
// difference, exactly as the CPU code compiled with -ffp-contract=off.
__global__ void RopeKernel(float* x, int64_t tokens, int64_t seq_len, int64_t heads, int64_t head_dim,
                           int64_t rotary_dim, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                           bool interleaved) {
  const int64_t half = rotary_dim / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * heads * half) return;
  const int64_t j = i % half;
  const int64_t h = (i / half) % heads;
  const int64_t t = i / (half * heads);
  const int64_t pos = t % seq_len;
  const float c = cos_t[pos * half + j], s = sin_t[pos * half + j];
  float* v = x + t * heads * head_dim + h * head_dim;
  // Pairs (j, j + half) (rotate_half), or (2j, 2j + 1) (interleaved, Llama 4).
  const int64_t ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
  const float a = v[ia], b = v[ib];
  v[ia] = a * c - b * s;
  v[ib] = b * c + a * s;
}

__global__ void ScaleRowsPeriodicKernel(float* x, int64_t rows, int64_t cols, const float* __restrict__ scales,
                                        int64_t period) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) x[i] = __fmul_rn(x[i], scales[(i / cols) % period]);
}

__global__ void AddKernel(float* x, const float* __restrict__ y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void AddBiasKernel(float* y, int64_t rows, int64_t cols, const float* __restrict__ bias) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) y[i] += bias[i % cols];
}

__global__ void GatherRowsKernel(const float* __restrict__ src, const int32_t* __restrict__ rows, int64_t n,
                                 int64_t cols, const float* __restrict__ scales, float* __restrict__ dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * cols) return;
  const float v = src[static_cast<int64_t>(rows[i / cols]) * cols + i % cols];
  dst[i] = scales != nullptr ? __fmul_rn(v, scales[i / cols]) : v;
}

__global__ void ScatterAddScaledRowsKernel(const float* __restrict__ src, const int32_t* __restrict__ src_rows,
                                           const int32_t* __restrict__ dst_rows, const float* __restrict__ scales,
                                           int64_t n, int64_t cols, float* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * cols) return;
  const int64_t r = i / cols, c = i % cols;
  const int64_t s = src_rows != nullptr ? src_rows[r] : r;
  const float v = __fmul_rn(src[s * cols + c], scales[r]);
  dst[static_cast<int64_t>(dst_rows[r]) * cols + c] += v;
}

// One block per row: fp32 max, then sum of exp(x - max) in double.
__global__ void TokenNllKernel(const float* __restrict__ logits, int64_t vocab, const int32_t* __restrict__ targets,
                               double* nll) {
  const int64_t r = blockIdx.x;
  const float* xr = logits + r * vocab;
  __shared__ float fpart[kThreads];
  __shared__ double dpart[kThreads];
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, xr[i]);
  fpart[threadIdx.x] = mx;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) fpart[threadIdx.x] = fmaxf(fpart[threadIdx.x], fpart[threadIdx.x + s]);
    __syncthreads();
  }
  mx = fpart[0];
  double sum = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) sum += static_cast<double>(expf(xr[i] - mx));
  dpart[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) dpart[threadIdx.x] += dpart[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const int32_t t = targets[r];
    nll[r] = (t < 0 || t >= vocab) ? static_cast<double>(NAN)
                                   : log(dpart[0]) - static_cast<double>(xr[t] - mx);
  }
}

__global__ void FloatToBf16Kernel(const float* __restrict__ in, int64_t n, uint16_t* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = Bf16Rne(in[i]);
}

// Four values per thread (16-byte loads, 8-byte stores; `in` 16-byte and `out` 8-byte aligned); the last thread
// also converts the n % 4 values past the last group of four.
__global__ void FloatToBf16Kernel4(const float* __restrict__ in, int64_t n, uint16_t* out) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, quads = n / 4;
  if (q > quads) return;
  if (q < quads) {
    StoreBf16x4(out + 4 * q, reinterpret_cast<const float4*>(in)[q]);
    return;
  }
  for (int64_t i = quads * 4; i < n; ++i) out[i] = Bf16Rne(in[i]);
}

__global__ void Bf16ToFloatKernel(const uint16_t* __restrict__ in, int64_t n, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __uint_as_float(static_cast<uint32_t>(in[i]) << 16);
}

__global__ void EmbedRowsKernel(const void* __restrict__ table, int dtype, int64_t cols,
                                const int32_t* __restrict__ ids, int64_t n, float scale, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * cols) return;
  const int64_t row = i / cols, col = i % cols;
  const int64_t src = static_cast<int64_t>(ids[row]) * cols + col;
  float v;
  if (dtype == 1) v = __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(table)[src]) << 16);
  else if (dtype == 2) v = __half2float(static_cast<const __half*>(table)[src]);
  else v = static_cast<const float*>(table)[src];
  out[i] = scale == 1.0f ? v : __fmul_rn(v, scale);
}

// flag[0] |= 1 when any of x[0, n) is NaN or infinite (exponent bits all ones); a grid-stride loop, one atomic per
// warp that saw one.
__global__ void FlagNonFiniteKernel(const float* __restrict__ x, int64_t n, unsigned* flag) {
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    bad |= (__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u;
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) atomicOr(flag, 1u);
}

struct DeviceBuffers {
  std::vector<void*> ptrs;
  ~DeviceBuffers() {
    for (void* p : ptrs) cudaFree(p);
  }
  std::string Alloc(float** p, int64_t n) {
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(p), static_cast<size_t>(n) * sizeof(float));
    if (e != cudaSuccess) return std::string("cudaMalloc: ") + cudaGetErrorString(e);
    ptrs.push_back(*p);
    return "";
  }
};

}  // namespace

std::string RmsNormDevice(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out,
                          cudaStream_t stream, uint16_t* out_bf16) {
  if (rows < 0 || dim <= 0 || rows > 0x7fffffff) return "RmsNormDevice: invalid shape";
  if (out == nullptr && out_bf16 == nullptr) return "RmsNormDevice: no output";
  if (rows == 0) return "";
  if (dim <= 512) {
    RmsNormWarpKernel<<<Blocks(rows * 32), kThreads, 0, stream>>>(x, rows, dim, weight, eps, out, out_bf16);
  } else if (dim % 4 == 0 && Aligned(x, 16) && Aligned(weight, 16) && Aligned(out, 16) && Aligned(out_bf16, 8)) {
    RmsNormKernel4<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, dim, weight, eps, out, out_bf16);
  } else {
    RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, dim, weight, eps, out, out_bf16);
  }
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string SwiGluDevice(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream,
                         uint16_t* out_bf16) {
  if (n <= 0) return n == 0 ? "" : "SwiGluDevice: invalid size";
  if (out == nullptr && out_bf16 == nullptr) return "SwiGluDevice: no output";
  LaunchGlu<SwiGluValue>(gate, up, n, out, out_bf16, stream);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string GeluTanhGluDevice(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream,
                              uint16_t* out_bf16) {
  if (n <= 0) return n == 0 ? "" : "GeluTanhGluDevice: invalid size";
  if (out == nullptr && out_bf16 == nullptr) return "GeluTanhGluDevice: no output";
  LaunchGlu<GeluTanhGluValue>(gate, up, n, out, out_bf16, stream);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string SoftcapDevice(float* x, int64_t n, float cap, cudaStream_t stream) {
  if (n < 0 || !(cap > 0.0f)) return "SoftcapDevice: invalid size or cap (must be positive)";
  if (n == 0) return "";
  SoftcapKernel<<<Blocks(n), kThreads, 0, stream>>>(x, n, cap);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string RopeDevice(float* x, int64_t num_seqs, int64_t seq_len, int64_t heads, int64_t head_dim,
                       const float* cos, const float* sin, cudaStream_t stream, int64_t rotary_dim,
                       bool interleaved) {
  if (rotary_dim <= 0) rotary_dim = head_dim;
  if (num_seqs < 0 || seq_len < 1 || heads < 1 || head_dim < 2 || head_dim % 2 != 0 || rotary_dim % 2 != 0 ||
      rotary_dim > head_dim)
    return "RopeDevice: invalid shape (head_dim and rotary_dim must be even and positive, rotary_dim <= head_dim)";
  const int64_t n = num_seqs * seq_len * heads * (rotary_dim / 2);
  if (n == 0) return "";
  if (interleaved && rotary_dim != head_dim) return "RopeDevice: interleaved pairs need rotary_dim == head_dim";
  RopeKernel<<<Blocks(n), kThreads, 0, stream>>>(x, num_seqs * seq_len, seq_len, heads, head_dim, rotary_dim, cos,
                                                 sin, interleaved);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string AddDevice(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return n == 0 ? "" : "AddDevice: invalid size";
  AddKernel<<<Blocks(n), kThreads, 0, stream>>>(x, y, n);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string AddBiasDevice(float* y, int64_t rows, int64_t cols, const float* bias, cudaStream_t stream) {
  if (rows < 0 || cols < 1) return "AddBiasDevice: invalid shape";
  if (rows == 0) return "";
  AddBiasKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(y, rows, cols, bias);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string GatherRowsDevice(const float* src, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                             cudaStream_t stream, const float* scales) {
  if (n < 0 || cols < 1) return "GatherRowsDevice: invalid shape";
  if (n == 0) return "";
  GatherRowsKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(src, rows, n, cols, scales, dst);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string ScaleRowsPeriodicDevice(float* x, int64_t rows, int64_t cols, const float* scales, int64_t period,
                                    cudaStream_t stream) {
  if (rows < 0 || cols < 1 || period < 1) return "ScaleRowsPeriodicDevice: invalid shape";
  if (rows == 0) return "";
  ScaleRowsPeriodicKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(x, rows, cols, scales, period);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string ScatterAddScaledRowsDevice(const float* src, const int32_t* src_rows, const int32_t* dst_rows,
                                       const float* scales, int64_t n, int64_t cols, float* dst,
                                       cudaStream_t stream) {
  if (n < 0 || cols < 1) return "ScatterAddScaledRowsDevice: invalid shape";
  if (n == 0) return "";
  ScatterAddScaledRowsKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(src, src_rows, dst_rows, scales, n, cols,
                                                                         dst);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string TokenNllDevice(const float* logits, int64_t rows, int64_t vocab, const int32_t* targets, double* nll,
                           cudaStream_t stream) {
  if (rows < 0 || vocab < 1 || rows > 0x7fffffff) return "TokenNllDevice: invalid shape";
  if (rows == 0) return "";
  TokenNllKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, targets, nll);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string FloatToBf16Device(const float* in, int64_t n, uint16_t* out, cudaStream_t stream) {
  if (n <= 0) return n == 0 ? "" : "FloatToBf16Device: invalid size";
  if (Aligned(in, 16) && Aligned(out, 8))
    FloatToBf16Kernel4<<<Blocks(n / 4 + 1), kThreads, 0, stream>>>(in, n, out);
  else
    FloatToBf16Kernel<<<Blocks(n), kThreads, 0, stream>>>(in, n, out);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string Bf16ToFloatDevice(const uint16_t* in, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0) return n == 0 ? "" : "Bf16ToFloatDevice: invalid size";
  Bf16ToFloatKernel<<<Blocks(n), kThreads, 0, stream>>>(in, n, out);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string EmbedRowsDevice(const void* table, TableDType dtype, int64_t cols, const int32_t* ids, int64_t n,
                            float scale, float* out, cudaStream_t stream) {
  if (n < 0 || cols <= 0) return "EmbedRowsDevice: invalid shape";
  if (n == 0) return "";
  EmbedRowsKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(table, static_cast<int>(dtype), cols, ids, n, scale, out);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string FlagNonFiniteDevice(const float* x, int64_t n, unsigned* flag, cudaStream_t stream) {
  if (n < 0) return "FlagNonFiniteDevice: invalid size";
  if (n == 0) return "";
  const unsigned blocks = std::min<unsigned>(Blocks(n), 4096);
  FlagNonFiniteKernel<<<blocks, kThreads, 0, stream>>>(x, n, flag);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string RmsNormHost(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out) {
  DeviceBuffers b;
  float *dx, *dw;
  std::string err;
  if (!(err = b.Alloc(&dx, rows * dim)).empty() || !(err = b.Alloc(&dw, dim)).empty()) return err;
  LLMC_CUDA_TRY(cudaMemcpy(dx, x, rows * dim * sizeof(float), cudaMemcpyHostToDevice));
  LLMC_CUDA_TRY(cudaMemcpy(dw, weight, dim * sizeof(float), cudaMemcpyHostToDevice));
  if (!(err = RmsNormDevice(dx, rows, dim, dw, eps, dx)).empty()) return err;
  LLMC_CUDA_TRY(cudaMemcpy(out, dx, rows * dim * sizeof(float), cudaMemcpyDeviceToHost));
  return "";
}

std::string SwiGluHost(const float* gate, const float* up, int64_t n, float* out) {
  DeviceBuffers b;
  float *dg, *du;
  std::string err;
  if (!(err = b.Alloc(&dg, n)).empty() || !(err = b.Alloc(&du, n)).empty()) return err;
  LLMC_CUDA_TRY(cudaMemcpy(dg, gate, n * sizeof(float), cudaMemcpyHostToDevice));
  LLMC_CUDA_TRY(cudaMemcpy(du, up, n * sizeof(float), cudaMemcpyHostToDevice));
  if (!(err = SwiGluDevice(dg, du, n, dg)).empty()) return err;
  LLMC_CUDA_TRY(cudaMemcpy(out, dg, n * sizeof(float), cudaMemcpyDeviceToHost));
  return "";
}

std::string AnyNonFiniteHost(const float* x, int64_t n, bool* any) {
  DeviceBuffers b;
  float *dx, *dflag;
  std::string err;
  if (!(err = b.Alloc(&dx, std::max<int64_t>(n, 1))).empty() || !(err = b.Alloc(&dflag, 1)).empty()) return err;
  unsigned* flag = reinterpret_cast<unsigned*>(dflag);
  LLMC_CUDA_TRY(cudaMemset(flag, 0, sizeof(unsigned)));
  if (n > 0) LLMC_CUDA_TRY(cudaMemcpy(dx, x, n * sizeof(float), cudaMemcpyHostToDevice));
  if (!(err = FlagNonFiniteDevice(dx, n, flag)).empty()) return err;
  unsigned h = 0;
  LLMC_CUDA_TRY(cudaMemcpy(&h, flag, sizeof(unsigned), cudaMemcpyDeviceToHost));
  *any = h != 0;
  return "";
}

std::string EmbedRowsHost(const void* table, TableDType dtype, int64_t rows, int64_t cols, const int32_t* ids,
                          int64_t n, float scale, float* out) {
  const int64_t table_bytes = rows * cols * (dtype == TableDType::kF32 ? 4 : 2);
  DeviceBuffers b;
  float *dt, *di, *dout;  // di holds int32 ids and dt the table's bytes, in float-sized buffers
  std::string err;
  if (!(err = b.Alloc(&dt, std::max<int64_t>((table_bytes + 3) / 4, 1))).empty() ||
      !(err = b.Alloc(&di, std::max<int64_t>(n, 1))).empty() ||
      !(err = b.Alloc(&dout, std::max<int64_t>(n * cols, 1))).empty())
    return err;
  LLMC_CUDA_TRY(cudaMemcpy(dt, table, table_bytes, cudaMemcpyHostToDevice));
  if (n > 0) LLMC_CUDA_TRY(cudaMemcpy(di, ids, n * sizeof(int32_t), cudaMemcpyHostToDevice));
  err = EmbedRowsDevice(dt, dtype, cols, reinterpret_cast<const int32_t*>(di), n, scale, dout);
  if (!err.empty()) return err;
  if (n > 0) LLMC_CUDA_TRY(cudaMemcpy(out, dout, n * cols * sizeof(float), cudaMemcpyDeviceToHost));
  return "";
}

}  // namespace llmc::cuda
