#include "engine/backend/cuda/activation_quant_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace llmc::cuda {
namespace {

std::string Err(const char* what, cudaError_t e) { return std::string(what) + ": " + cudaGetErrorString(e); }

__device__ float RoundD(float f, int round) {
  if (round == 1) {  // bf16, nearest even (NaN kept)
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f;
    u += 0x7fffu + ((u >> 16) & 1u);
    return __uint_as_float(u & 0xffff0000u);
  }
  if (round == 2) return __half2float(__float2half_rn(f));
  return f;
}

// e4m3fn code of a finite |f| <= 448, nearest even; NaN gives 0x7f/0xff (engine/tensor/dtype.h
// FloatToF8E4M3Clamped).
__device__ uint32_t ToF8E4M3(float f) {
  uint32_t u = __float_as_uint(f);
  uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7fffffffu;
  const float m = 12582912.0f;
  uint32_t sub = static_cast<uint32_t>(static_cast<int32_t>(__fsub_rn(__fadd_rn(__fmul_rn(__uint_as_float(u), 512.0f), m), m)));
  uint32_t norm = ((u + 0x7ffffu + ((u >> 20) & 1u)) >> 20) - (120u << 3);
  uint32_t code = u < 0x3c800000u ? sub : norm;
  code = code > 0x7eu ? 0x7fu : code;
  return sign | code;
}

// The value of an e4m3fn code; 0x7f/0xff (the format's NaN, what ToF8E4M3 gives a NaN) is NaN, as F8E4M3ToFloat.
__device__ float FromF8E4M3(uint32_t b) {
  const float sign = (b & 0x80u) ? -1.0f : 1.0f;
  const uint32_t e = (b >> 3) & 0xfu, mant = b & 0x7u;
  if (e == 0xfu && mant == 0x7u) return __uint_as_float(0x7fffffffu);
  if (e == 0) return sign * __fmul_rn(static_cast<float>(mant), 0.001953125f);  // mant * 2^-9
  return sign * ldexpf(1.0f + static_cast<float>(mant) * 0.125f, static_cast<int>(e) - 7);
}

// fp4 e2m1 value of f (nearest, ties to the even code; |f| > 6 -> 6), as FP4ToFloat(FloatToFP4(f)).
__device__ float RoundFp4(float f) {
  const float a = fabsf(f);
  const int code = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f);
  const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return f < 0.0f ? -mag[code] : mag[code];
}

// std::clamp(v, lo, hi) as the CPU reference computes it, and as torch.clamp: a NaN stays NaN. (fminf/fmaxf
// would return the bound instead: an fp16 token beyond 65504 is inf, its scale inf, inf / inf NaN, and the
// clamp must not turn that into qmin.)
__device__ float ClampD(float v, float lo, float hi) { return v < lo ? lo : (hi < v ? hi : v); }

__device__ float DynamicScaleD(const ActivationQuantParams& p, float mn, float mx) {
  const float amax = fmaxf(-mn, mx);
  if (p.kind == 0) {
    float s = RoundD(__fdiv_rn(amax, __fdiv_rn(p.qmax - p.qmin, 2.0f)), p.round);
    return s == 0.0f ? p.dtype_eps : s;
  }
  if (p.kind == 1) {
    float s = RoundD(__fdiv_rn(amax, 448.0f), p.round);
    return s == 0.0f ? p.dtype_eps : s;
  }
  float local = ClampD(__fmul_rn(p.global_scale, RoundD(__fdiv_rn(amax, 6.0f), p.round)), -448.0f, 448.0f);
  float s = FromF8E4M3(ToF8E4M3(local));
  return s == 0.0f ? 0.125f : s;
}

__device__ float FakeQuantD(const ActivationQuantParams& p, float x, float scale) {
  if (p.kind == 0) {
    float q = rintf(ClampD(RoundD(__fdiv_rn(x, scale), p.round), p.qmin, p.qmax));
    return RoundD(__fmul_rn(q, scale), p.round);
  }
  if (p.kind == 1) {
    float q = FromF8E4M3(ToF8E4M3(ClampD(RoundD(__fdiv_rn(x, scale), p.round), -448.0f, 448.0f)));
    return RoundD(__fmul_rn(q, scale), p.round);
  }
  const float e = __fdiv_rn(scale, p.global_scale);
  float q = RoundFp4(ClampD(__fdiv_rn(x, e), -6.0f, 6.0f));  // the fp32 quotient, unrounded, as the CPU
  return RoundD(__fmul_rn(q, e), p.round);
}

constexpr int kThreads = 128;

// One block per (row, group): the group's range, its scale, then its values.
__global__ void FakeQuantKernel(const float* x, float* y, int64_t groups, ActivationQuantParams p) {
  const int64_t item = blockIdx.x;
  const int64_t row = item / groups, g = item % groups;
  const float* in = x + row * p.cols + g * p.group_cols;
  float* out = y + row * p.cols + g * p.group_cols;
  __shared__ float smin[kThreads], smax[kThreads];
  __shared__ float scale;
  if (p.dynamic) {
    float mn = 0.0f, mx = 0.0f;
    for (int64_t c = threadIdx.x; c < p.group_cols; c += blockDim.x) {
      const float v = RoundD(in[c], p.round);
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
    }
    smin[threadIdx.x] = mn;
    smax[threadIdx.x] = mx;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) {
        smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
        smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) scale = DynamicScaleD(p, smin[0], smax[0]);
  } else if (threadIdx.x == 0) {
    scale = p.num_static == 1 ? p.static_scales[0] : p.static_scales[g];
  }
  __syncthreads();
  const float sc = scale;
  for (int64_t c = threadIdx.x; c < p.group_cols; c += blockDim.x) out[c] = FakeQuantD(p, RoundD(in[c], p.round), sc);
}

}  // namespace

std::string FakeQuantActivationsDevice(const float* x, float* y, int64_t rows, const ActivationQuantParams& p,
                                       cudaStream_t stream) {
  if (rows < 0 || p.cols <= 0 || p.group_cols <= 0 || p.cols % p.group_cols != 0 || p.kind < 0 || p.kind > 2)
    return "FakeQuantActivationsDevice: bad shape or kind";
  if (!p.dynamic && (p.num_static < 1 || p.num_static > kMaxStaticActivationScales ||
                     (p.num_static != 1 && p.num_static != p.cols / p.group_cols)))
    return "FakeQuantActivationsDevice: static scales do not match the groups";
  if (rows == 0) return "";
  const int64_t groups = p.cols / p.group_cols;
  const int64_t blocks = rows * groups;
  if (blocks > 0x7fffffffLL) return "FakeQuantActivationsDevice: too many rows for one launch";
  FakeQuantKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, y, groups, p);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return Err("FakeQuantKernel launch", e);
  return "";
}

std::string FakeQuantActivationsHost(const float* x, float* y, int64_t rows, const ActivationQuantParams& p) {
  const size_t bytes = static_cast<size_t>(rows * p.cols) * sizeof(float);
  float* d = nullptr;
  if (cudaError_t e = cudaMalloc(&d, bytes > 0 ? bytes : 4); e != cudaSuccess) return Err("cudaMalloc", e);
  std::string err;
  if (cudaError_t e = cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice); e != cudaSuccess) err = Err("cudaMemcpy", e);
  if (err.empty()) err = FakeQuantActivationsDevice(d, d, rows, p, nullptr);
  if (err.empty())
    if (cudaError_t e = cudaMemcpy(y, d, bytes, cudaMemcpyDeviceToHost); e != cudaSuccess) err = Err("cudaMemcpy", e);
  cudaFree(d);
  return err;
}

}  // namespace llmc::cuda
