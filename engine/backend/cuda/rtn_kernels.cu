#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "engine/backend/cuda/cuda_check.h"
#include "engine/backend/cuda/rtn_kernels.h"


namespace llmc::cuda {

namespace {

__device__ __forceinline__ float Bf16ToF(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
// Round a finite float to bf16 (RNE), returned as float.
__device__ __forceinline__ float RoundBf16(float f) {
  uint32_t u = __float_as_uint(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return __uint_as_float(u & 0xffff0000u);
}
__device__ __forceinline__ uint16_t F2Bf16Bits(float f) { return static_cast<uint16_t>(__float_as_uint(RoundBf16(f)) >> 16); }

// One warp per (row, group): lanes stride over the group's columns.
// weight [rows, cols] bf16; q [rows, cols]; scales/zps [rows, groups]
__global__ void IntGroupKernel(const uint16_t* __restrict__ w, int64_t rows, int64_t cols, int64_t group, float qmin,
                               float qmax, bool symmetric, int8_t* __restrict__ q, uint16_t* __restrict__ scales,
                               int8_t* __restrict__ zps) {
  const int64_t groups = cols / group;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows * groups) return;
  const int64_t r = warp / groups, g = warp % groups;
  const uint16_t* src = w + r * cols + g * group;
  float lo = 0.0f, hi = 0.0f;
  for (int64_t c = lane; c < group; c += 32) {
    float x = Bf16ToF(src[c]);
    lo = fminf(lo, x);
    hi = fmaxf(hi, x);
  }
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  float scale, zp = 0.0f;
  if (symmetric) {
    scale = RoundBf16(__fdiv_rn(fmaxf(-lo, hi), (qmax - qmin) / 2.0f));
  } else {
    scale = RoundBf16(__fdiv_rn(RoundBf16(__fsub_rn(hi, lo)), qmax - qmin));
  }
  if (scale == 0.0f) scale = 0.0078125f;
  if (!symmetric) zp = rintf(fminf(fmaxf(RoundBf16(__fsub_rn(qmin, RoundBf16(__fdiv_rn(lo, scale)))), qmin), qmax));
  if (lane == 0) {
    scales[r * groups + g] = F2Bf16Bits(scale);
    if (!symmetric) zps[r * groups + g] = static_cast<int8_t>(zp);
  }
  int8_t* dst = q + r * cols + g * group;
  for (int64_t c = lane; c < group; c += 32) {
    float s = RoundBf16(__fdiv_rn(Bf16ToF(src[c]), scale));
    if (!symmetric) s = RoundBf16(__fadd_rn(s, zp));
    dst[c] = static_cast<int8_t>(rintf(fminf(fmaxf(s, qmin), qmax)));
  }
}

}  // namespace

int DeviceCount(std::string* error) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (error) *error = cudaGetErrorString(e);
    return 0;
  }
  return n;
}

std::string DeviceName() {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "unknown";
  char gib[32];
  std::snprintf(gib, sizeof gib, "%.1f", p.totalGlobalMem / 1073741824.0);
  return std::string(p.name, strnlen(p.name, sizeof p.name)) + " (sm_" + std::to_string(p.major) +
         std::to_string(p.minor) + ", " + gib + " GiB)";
}

std::string QuantizeIntGroupBF16(const uint16_t* weight, int64_t rows, int64_t cols, int64_t group, int num_bits,
                                 bool symmetric, int8_t* q, uint16_t* scales, int8_t* zero_points, float* kernel_ms) {
  if (rows <= 0 || cols <= 0 || group <= 0 || cols % group != 0 || num_bits < 2 || num_bits > 8)
    return "QuantizeIntGroupBF16: invalid shape or arguments";
  const int64_t groups = cols / group;
  uint16_t *d_w = nullptr, *d_s = nullptr;
  int8_t *d_q = nullptr, *d_z = nullptr;
  std::string err;
  auto run = [&]() -> std::string {
    LLMC_CUDA_TRY(cudaMalloc(&d_w, rows * cols * 2));
    LLMC_CUDA_TRY(cudaMalloc(&d_q, rows * cols));
    LLMC_CUDA_TRY(cudaMalloc(&d_s, rows * groups * 2));
    LLMC_CUDA_TRY(cudaMalloc(&d_z, rows * groups));
    LLMC_CUDA_TRY(cudaMemcpy(d_w, weight, rows * cols * 2, cudaMemcpyHostToDevice));
    cudaEvent_t start, stop;
    LLMC_CUDA_TRY(cudaEventCreate(&start));
    LLMC_CUDA_TRY(cudaEventCreate(&stop));
    const int threads = 256;
    const int64_t warps = rows * groups;
    const int64_t blocks = (warps * 32 + threads - 1) / threads;
    const float qmax = static_cast<float>((1 << (num_bits - 1)) - 1), qmin = -static_cast<float>(1 << (num_bits - 1));
    LLMC_CUDA_TRY(cudaEventRecord(start));
    IntGroupKernel<<<static_cast<unsigned>(blocks), threads>>>(d_w, rows, cols, group, qmin, qmax, symmetric, d_q, d_s, d_z);
    LLMC_CUDA_TRY(cudaGetLastError());
    LLMC_CUDA_TRY(cudaEventRecord(stop));
    LLMC_CUDA_TRY(cudaEventSynchronize(stop));
    float ms = 0;
    LLMC_CUDA_TRY(cudaEventElapsedTime(&ms, start, stop));
    if (kernel_ms) *kernel_ms = ms;
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    LLMC_CUDA_TRY(cudaMemcpy(q, d_q, rows * cols, cudaMemcpyDeviceToHost));
    LLMC_CUDA_TRY(cudaMemcpy(scales, d_s, rows * groups * 2, cudaMemcpyDeviceToHost));
    if (!symmetric && zero_points) LLMC_CUDA_TRY(cudaMemcpy(zero_points, d_z, rows * groups, cudaMemcpyDeviceToHost));
    return "";
  };
  err = run();
  cudaFree(d_w);
  cudaFree(d_q);
  cudaFree(d_s);
  cudaFree(d_z);
  return err;
}

}  // namespace llmc::cuda
