#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "engine/backend/cuda/cuda_check.h"
#include "engine/backend/cuda/model_kernels.h"


namespace llmc::cuda {

namespace {

constexpr int kThreads = 256;

// One block per row: sum of squares in double (as the CPU reference), then the scaled product.
__global__ void RmsNormKernel(const float* __restrict__ x, int64_t dim, const float* __restrict__ w, float eps,
                              float* out) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  __shared__ double part[kThreads];
  part[threadIdx.x] = ss;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(static_cast<float>(part[0] / dim)) + eps));
  float* o = out + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __fmul_rn(w[i], __fmul_rn(xr[i], inv));
}

__global__ void SwiGluKernel(const float* __restrict__ gate, const float* __restrict__ up, int64_t n, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  out[i] = g / (1.0f + expf(-g)) * up[i];
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

std::string RmsNormDevice(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out) {
  if (rows <= 0 || dim <= 0) return rows == 0 ? "" : "RmsNormDevice: invalid shape";
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads>>>(x, dim, weight, eps, out);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string SwiGluDevice(const float* gate, const float* up, int64_t n, float* out) {
  if (n <= 0) return n == 0 ? "" : "SwiGluDevice: invalid size";
  SwiGluKernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads>>>(gate, up, n, out);
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

}  // namespace llmc::cuda
