#include "engine/backend/cuda/awq_kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "engine/backend/cuda/cuda_check.h"

namespace llmc::cuda {

namespace {

constexpr int kThreads = 256;

using gptq::Clamp;
using gptq::Div;
using gptq::FakeQuantValue;
using gptq::RoundTo;
using gptq::Sub;

// One thread per (row, group): the group's range and parameters, then its trial values.
__global__ void AwqTrialKernel(const float* __restrict__ w, int64_t rows, int64_t cols, int64_t group,
                               const double* __restrict__ s, FakeQuantSpec spec, float eps, float* __restrict__ out) {
  const int64_t groups = cols / group;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * groups) return;
  const int64_t r = idx / groups, g = idx % groups;
  const float* wr = w + r * cols + g * group;
  const double* sg = s + g * group;
  float* o = out + r * cols + g * group;
  const FakeQuantSpec::Round rd = spec.round;
  float mn = 0.0f, mx = 0.0f;
  for (int64_t c = 0; c < group; ++c) {
    const float v = RoundTo(rd, static_cast<float>(__dmul_rn(static_cast<double>(wr[c]), sg[c])));
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  float scale, zp = 0.0f;
  if (spec.asymmetric) {
    scale = RoundTo(rd, Div(RoundTo(rd, Sub(mx, mn)), spec.qmax - spec.qmin));
  } else {
    scale = RoundTo(rd, Div(fmaxf(-mn, mx), (spec.qmax - spec.qmin) / 2.0f));
  }
  if (scale == 0.0f) scale = eps;
  if (spec.asymmetric) zp = rintf(Clamp(RoundTo(rd, Sub(spec.qmin, RoundTo(rd, Div(mn, scale)))), spec.qmin, spec.qmax));
  for (int64_t c = 0; c < group; ++c) {
    const float v = RoundTo(rd, static_cast<float>(__dmul_rn(static_cast<double>(wr[c]), sg[c])));
    const float q = FakeQuantValue(spec, v, scale, zp);
    o[c] = RoundTo(rd, static_cast<float>(__ddiv_rn(static_cast<double>(q), sg[c])));
  }
}

// partials[block] = this block's share of sum (a - b)^2 (grid-stride, fp64, tree-reduced in shared memory).
__global__ void SquaredErrorPartialKernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                                          double* __restrict__ partials) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    acc = __fma_rn(d, d, acc);
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = sh[0];
}

// partials[0] = the sum of partials[0, count) (one block, fixed order).
__global__ void SumPartialsKernel(double* partials, int count) {
  __shared__ double sh[kAwqPartials];
  for (int i = threadIdx.x; i < kAwqPartials; i += blockDim.x) sh[i] = i < count ? partials[i] : 0.0;
  __syncthreads();
  for (int k = kAwqPartials / 2; k > 0; k >>= 1) {
    for (int i = threadIdx.x; i < k; i += blockDim.x) sh[i] += sh[i + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[0] = sh[0];
}

}  // namespace

std::string AwqTrialWeightDevice(const float* w, int64_t rows, int64_t cols, int64_t group, const double* s,
                                 const FakeQuantSpec& spec, float eps, float* out, cudaStream_t stream) {
  if (spec.kind != FakeQuantSpec::Kind::kInt) return "AwqTrialWeightDevice: only integer schemes";
  if (group <= 0 || cols % group != 0)
    return "AwqTrialWeightDevice: group " + std::to_string(group) + " does not divide cols " + std::to_string(cols);
  const int64_t n = rows * (cols / group);
  if (n == 0) return "";
  AwqTrialKernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(w, rows, cols, group,
                                                                                                 s, spec, eps, out);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string AwqSquaredErrorSum(const float* a, const float* b, int64_t n, double* partials, double* host_sum,
                               cudaStream_t stream) {
  *host_sum = 0.0;
  if (n <= 0) return "";
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kAwqPartials));
  SquaredErrorPartialKernel<<<blocks, kThreads, 0, stream>>>(a, b, n, partials);
  LLMC_CUDA_TRY(cudaGetLastError());
  SumPartialsKernel<<<1, kThreads, 0, stream>>>(partials, blocks);
  LLMC_CUDA_TRY(cudaGetLastError());
  LLMC_CUDA_TRY(cudaMemcpyAsync(host_sum, partials, sizeof(double), cudaMemcpyDeviceToHost, stream));
  LLMC_CUDA_TRY(cudaStreamSynchronize(stream));
  return "";
}

}  // namespace llmc::cuda
