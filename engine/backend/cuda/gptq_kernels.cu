#include "engine/backend/cuda/gptq_kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <string>

#include "engine/backend/cuda/cuda_check.h"

// cuSOLVER status as a message (cuda_check.h covers CUDA and cuBLAS).
#define LLMC_CUSOLVER_TRY(expr)                                                                          \
  do {                                                                                                   \
    cusolverStatus_t st_ = (expr);                                                                       \
    if (st_ != CUSOLVER_STATUS_SUCCESS)                                                                  \
      return std::string(#expr) + " failed at " __FILE__ ":" + std::to_string(__LINE__) +                \
             ": cusolverStatus_t " + std::to_string(static_cast<int>(st_));                             \
  } while (0)

namespace llmc::cuda {

namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxGridY = 65535;
// Rows per CTA of the block kernel (one warp; each thread owns one row).
constexpr int kRowsPerCta = 32;
// Shared-memory row stride of a tile: +1 so that both the transposing load and the per-thread walk are free of
// bank conflicts.
constexpr int kTileLd = kRowsPerCta + 1;
// Largest dynamic shared memory the block kernel asks for (sm_90 allows up to 227 KiB per CTA).
constexpr int64_t kMaxTileBytes = 200 * 1024;

unsigned Blocks(int64_t n, int threads = kThreads) { return static_cast<unsigned>((n + threads - 1) / threads); }
unsigned GridY(int64_t rows) { return static_cast<unsigned>(std::min<int64_t>(rows, kMaxGridY)); }

std::string Shape(int64_t rows, int64_t cols) { return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]"; }

// scratch[0] = first non-finite index (ULLONG_MAX when none), scratch[1] = zero count.
__global__ void ScanKernel(const float* __restrict__ x, int64_t n, bool count_zeros, unsigned long long* scratch) {
  unsigned long long zeros = 0, first = ULLONG_MAX;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    if (!isfinite(v) && first == ULLONG_MAX) first = static_cast<unsigned long long>(i);
    zeros += v == 0.0f;
  }
  for (int off = 16; off > 0; off >>= 1) {
    zeros += __shfl_xor_sync(0xffffffffu, zeros, off);
    first = min(first, __shfl_xor_sync(0xffffffffu, first, off));
  }
  if (threadIdx.x % 32 == 0) {
    if (first != ULLONG_MAX) atomicMin(&scratch[0], first);
    if (count_zeros && zeros != 0) atomicAdd(&scratch[1], zeros);
  }
}

template <typename T>
__global__ void PermuteColumnsKernel(const T* __restrict__ src, int64_t rows, int64_t cols,
                                     const int32_t* __restrict__ perm, bool inverse, T* __restrict__ dst) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int64_t p = perm[j];
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    if (inverse) {
      dst[r * cols + p] = src[r * cols + j];
    } else {
      dst[r * cols + j] = src[r * cols + p];
    }
  }
}

__global__ void KeepNonZeroKernel(const float* __restrict__ w, int64_t n, uint8_t* __restrict__ keep) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    keep[i] = fabsf(w[i]) <= 1e-8f ? 0 : 1;
}

__global__ void ZeroColumnsKernel(float* w, int64_t rows, int64_t cols, const uint8_t* __restrict__ dead) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols || !dead[j]) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) w[r * cols + j] = 0.0f;
}

// a[i, j] = (T) h[perm[i], perm[j]]; the diagonal: 1 where dead, then + damp (in T), as inverse_hessian.cc.
template <typename T>
__global__ void BuildDampedKernel(const float* __restrict__ h, int64_t n, const int32_t* __restrict__ perm,
                                  const uint8_t* __restrict__ dead, T damp, T* __restrict__ a) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const int64_t pj = perm ? perm[j] : j;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const int64_t pi = perm ? perm[i] : i;
    T v = static_cast<T>(h[pi * n + pj]);
    if (i == j) {
      if (dead[i]) v = T(1);
      v = v + damp;  // --fmad=false: a plain rounded addition
    }
    a[i * n + j] = v;
  }
}

// scratch[0] = min i with !(a_ii > 0) or a_ii not finite.
template <typename T>
__global__ void CheckDiagonalKernel(const T* __restrict__ a, int64_t n, unsigned long long* scratch) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T d = a[i * n + i];
  if (!(d > T(0)) || !isfinite(static_cast<double>(d))) atomicMin(&scratch[0], static_cast<unsigned long long>(i));
}

// u[i, j] = j >= i ? (float) a[i, j] : 0 (row-major; the column-major lower triangle of cuSOLVER's factor).
template <typename T>
__global__ void UpperToFloatKernel(const T* __restrict__ a, int64_t n, float* __restrict__ u) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) u[i * n + j] = j >= i ? static_cast<float>(a[i * n + j]) : 0.0f;
}

__global__ void IdentityKernel(float* u, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) u[i * n + j] = i == j ? 1.0f : 0.0f;
}

// w[r, c] -= t[r, c - c0] * keep[r, c] for c in [c0, cols): the CPU's `dst[c] -= t[c] * k[c]` with k in {0, 1}.
__global__ void MaskedSubtractKernel(float* w, int64_t rows, int64_t cols, int64_t c0, const float* __restrict__ t,
                                     const uint8_t* __restrict__ keep) {
  const int64_t n = cols - c0;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t i = r * cols + c0 + c;
    const float k = keep[i] ? 1.0f : 0.0f;
    w[i] = __fsub_rn(w[i], __fmul_rn(t[r * n + c], k));
  }
}

// One warp per CTA, one thread per row. The CTA copies its rows of the block into a tile ([count][ld]: column i of
// local row t at tile[i * ld + t]), each thread walks the columns as GptqQuantize's inner loop does, and the tile
// (now the q values) is copied back.
__global__ void __launch_bounds__(kRowsPerCta) GptqBlockKernel(GptqBlockArgs a) {
  extern __shared__ float smem[];
  const int t = threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRowsPerCta;
  const int64_t r = r0 + t;
  const int64_t count = a.count, cols = a.cols;
  const bool preserve = a.keep != nullptr;
  float* tile;
  float* ktile;
  int64_t ld;
  if (a.tile != nullptr) {
    tile = a.tile + r0;
    ktile = preserve ? a.keep_tile + r0 : nullptr;
    ld = a.rows;
  } else {
    tile = smem;
    ktile = preserve ? smem + count * kTileLd : nullptr;
    ld = kTileLd;
  }
  const int64_t local_rows = min(static_cast<int64_t>(kRowsPerCta), a.rows - r0);
  for (int64_t idx = t; idx < local_rows * count; idx += kRowsPerCta) {
    const int64_t rr = idx / count, cc = idx % count;
    const int64_t g = (r0 + rr) * cols + a.i1 + cc;
    tile[cc * ld + rr] = a.w[g];
    if (preserve) ktile[cc * ld + rr] = a.keep[g] ? 1.0f : 0.0f;
  }
  __syncthreads();
  if (r < a.rows) {
    double loss = a.row_loss[r];
    const int64_t srow = a.per_row ? r * a.num_groups : 0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t c = a.i1 + i;
      const float d = __ldg(a.u + c * cols + c);
      const int64_t sidx = srow + a.col_group[c];
      const float scale = __ldg(a.scale + sidx);
      const float zp = a.zero_point ? __ldg(a.zero_point + sidx) : 0.0f;
      const float x = tile[i * ld + t];
      const float q = gptq::FakeQuantValue(a.spec, x, scale, zp);
      const float diff = __fsub_rn(x, q);
      loss += static_cast<double>(__fdiv_rn(__fmul_rn(diff, diff), __fmul_rn(d, d)));
      const float e = __fdiv_rn(diff, d);
      a.err[i * a.rows + r] = e;
      tile[i * ld + t] = q;
      const float* urow = a.u + c * cols + a.i1;
      if (preserve) {
#pragma unroll 4
        for (int64_t j = i + 1; j < count; ++j)
          tile[j * ld + t] = __fsub_rn(tile[j * ld + t], __fmul_rn(__fmul_rn(e, __ldg(urow + j)), ktile[j * ld + t]));
      } else {
#pragma unroll 4
        for (int64_t j = i + 1; j < count; ++j) tile[j * ld + t] = __fsub_rn(tile[j * ld + t], __fmul_rn(e, __ldg(urow + j)));
      }
    }
    a.row_loss[r] = loss;
  }
  __syncthreads();
  for (int64_t idx = t; idx < local_rows * count; idx += kRowsPerCta) {
    const int64_t rr = idx / count, cc = idx % count;
    a.w[(r0 + rr) * cols + a.i1 + cc] = tile[cc * ld + rr];
  }
}

int64_t TileBytes(int64_t block_size, bool keep) { return block_size * kTileLd * 4 * (keep ? 2 : 1); }

template <typename T>
struct Solver;
template <>
struct Solver<double> {
  static cusolverStatus_t PotrfSize(cusolverDnHandle_t h, int n, double* a, int* lw) {
    return cusolverDnDpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, n, lw);
  }
  static cusolverStatus_t PotriSize(cusolverDnHandle_t h, int n, double* a, int* lw) {
    return cusolverDnDpotri_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, n, lw);
  }
  static cusolverStatus_t Potrf(cusolverDnHandle_t h, int n, double* a, double* w, int lw, int* info) {
    return cusolverDnDpotrf(h, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lw, info);
  }
  static cusolverStatus_t Potri(cusolverDnHandle_t h, int n, double* a, double* w, int lw, int* info) {
    return cusolverDnDpotri(h, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lw, info);
  }
};
template <>
struct Solver<float> {
  static cusolverStatus_t PotrfSize(cusolverDnHandle_t h, int n, float* a, int* lw) {
    return cusolverDnSpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, n, lw);
  }
  static cusolverStatus_t PotriSize(cusolverDnHandle_t h, int n, float* a, int* lw) {
    return cusolverDnSpotri_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, n, lw);
  }
  static cusolverStatus_t Potrf(cusolverDnHandle_t h, int n, float* a, float* w, int lw, int* info) {
    return cusolverDnSpotrf(h, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lw, info);
  }
  static cusolverStatus_t Potri(cusolverDnHandle_t h, int n, float* a, float* w, int lw, int* info) {
    return cusolverDnSpotri(h, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lw, info);
  }
};

// A device allocation freed on scope exit (for the factorization's workspace).
struct DeviceBuffer {
  void* p = nullptr;
  ~DeviceBuffer() {
    if (p != nullptr) cudaFree(p);
  }
};

// The factorization steps of inverse_hessian.cc's Factor<T> on the device; "" or what failed in `failure`.
template <typename T>
std::string FactorDevice(cusolverDnHandle_t solver, cudaStream_t stream, const float* h, int64_t n,
                         const int32_t* perm, const uint8_t* dead, double damp, T* a, std::string* failure) {
  const dim3 grid(Blocks(n), GridY(n));
  BuildDampedKernel<T><<<grid, kThreads, 0, stream>>>(h, n, perm, dead, static_cast<T>(damp), a);
  LLMC_CUDA_TRY(cudaGetLastError());
  const int ni = static_cast<int>(n);
  int lw_potrf = 0, lw_potri = 0;
  LLMC_CUSOLVER_TRY(Solver<T>::PotrfSize(solver, ni, a, &lw_potrf));
  LLMC_CUSOLVER_TRY(Solver<T>::PotriSize(solver, ni, a, &lw_potri));
  const int lw = std::max(lw_potrf, lw_potri);
  DeviceBuffer work, info_buf;
  LLMC_CUDA_TRY(cudaMalloc(&work.p, static_cast<size_t>(std::max(lw, 1)) * sizeof(T)));
  LLMC_CUDA_TRY(cudaMalloc(&info_buf.p, 16));  // the int info at 0, a 64-bit word at 8
  int* d_info = static_cast<int*>(info_buf.p);
  T* w = static_cast<T*>(work.p);
  const std::string nn = std::to_string(n);
  auto read_info = [&](int* info) -> std::string {
    LLMC_CUDA_TRY(cudaMemcpyAsync(info, d_info, sizeof(int), cudaMemcpyDeviceToHost, stream));
    LLMC_CUDA_TRY(cudaStreamSynchronize(stream));
    return "";
  };
  int info = 0;
  LLMC_CUSOLVER_TRY(Solver<T>::Potrf(solver, ni, a, w, lw, d_info));
  LLMC_TRY_STR(read_info(&info));
  if (info > 0) {
    *failure = "the Cholesky factorization of the dampened Hessian failed at column " + std::to_string(info - 1) +
               " of " + nn + " (not positive definite)";
    return "";
  }
  if (info < 0) return "cuSOLVER potrf rejected argument " + std::to_string(-info);
  LLMC_CUSOLVER_TRY(Solver<T>::Potri(solver, ni, a, w, lw, d_info));
  LLMC_TRY_STR(read_info(&info));
  if (info > 0) {
    *failure = "inverting the Cholesky factor failed at column " + std::to_string(info - 1) + " of " + nn;
    return "";
  }
  if (info < 0) return "cuSOLVER potri rejected argument " + std::to_string(-info);
  LLMC_CUSOLVER_TRY(Solver<T>::Potrf(solver, ni, a, w, lw, d_info));
  LLMC_TRY_STR(read_info(&info));
  if (info > 0) {
    *failure = "the Cholesky factorization of the inverse Hessian failed at column " + std::to_string(info - 1) +
               " of " + nn;
    return "";
  }
  if (info < 0) return "cuSOLVER potrf rejected argument " + std::to_string(-info);
  unsigned long long* d_first = reinterpret_cast<unsigned long long*>(static_cast<char*>(info_buf.p) + 8);
  const unsigned long long none = ULLONG_MAX;
  LLMC_CUDA_TRY(cudaMemcpyAsync(d_first, &none, sizeof(none), cudaMemcpyHostToDevice, stream));
  CheckDiagonalKernel<T><<<Blocks(n), kThreads, 0, stream>>>(a, n, d_first);
  LLMC_CUDA_TRY(cudaGetLastError());
  unsigned long long first = 0;
  LLMC_CUDA_TRY(cudaMemcpyAsync(&first, d_first, sizeof(first), cudaMemcpyDeviceToHost, stream));
  LLMC_CUDA_TRY(cudaStreamSynchronize(stream));
  if (first != ULLONG_MAX)
    *failure = "the inverse-Hessian factor has a non-positive or non-finite diagonal at column " + std::to_string(first);
  return "";
}

}  // namespace

std::string ScanValues(const float* x, int64_t n, unsigned long long* scratch, cudaStream_t stream,
                       int64_t* first_nonfinite, int64_t* zeros) {
  const unsigned long long init[2] = {ULLONG_MAX, 0};
  LLMC_CUDA_TRY(cudaMemcpyAsync(scratch, init, sizeof(init), cudaMemcpyHostToDevice, stream));
  if (n > 0) {
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(Blocks(n), 4096));
    ScanKernel<<<blocks, kThreads, 0, stream>>>(x, n, zeros != nullptr, scratch);
    LLMC_CUDA_TRY(cudaGetLastError());
  }
  unsigned long long out[2];
  LLMC_CUDA_TRY(cudaMemcpyAsync(out, scratch, sizeof(out), cudaMemcpyDeviceToHost, stream));
  LLMC_CUDA_TRY(cudaStreamSynchronize(stream));
  *first_nonfinite = out[0] == ULLONG_MAX ? -1 : static_cast<int64_t>(out[0]);
  if (zeros != nullptr) *zeros = static_cast<int64_t>(out[1]);
  return "";
}

std::string CopyDiagonal(const float* h, int64_t n, float* host_diag, cudaStream_t stream) {
  if (n <= 0) return "";
  LLMC_CUDA_TRY(cudaMemcpy2DAsync(host_diag, sizeof(float), h, static_cast<size_t>(n + 1) * sizeof(float),
                                  sizeof(float), static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream));
  LLMC_CUDA_TRY(cudaStreamSynchronize(stream));
  return "";
}

std::string PermuteColumns(const float* src, int64_t rows, int64_t cols, const int32_t* perm, bool inverse,
                           float* dst, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return "";
  PermuteColumnsKernel<float><<<dim3(Blocks(cols), GridY(rows)), kThreads, 0, stream>>>(src, rows, cols, perm,
                                                                                         inverse, dst);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string PermuteColumns(const uint8_t* src, int64_t rows, int64_t cols, const int32_t* perm, bool inverse,
                           uint8_t* dst, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return "";
  PermuteColumnsKernel<uint8_t><<<dim3(Blocks(cols), GridY(rows)), kThreads, 0, stream>>>(src, rows, cols, perm,
                                                                                           inverse, dst);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string KeepNonZero(const float* w, int64_t n, uint8_t* keep, cudaStream_t stream) {
  if (n <= 0) return "";
  KeepNonZeroKernel<<<static_cast<unsigned>(std::min<int64_t>(Blocks(n), 8192)), kThreads, 0, stream>>>(w, n, keep);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

std::string ZeroColumns(float* w, int64_t rows, int64_t cols, const uint8_t* dead, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return "";
  ZeroColumnsKernel<<<dim3(Blocks(cols), GridY(rows)), kThreads, 0, stream>>>(w, rows, cols, dead);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

GptqLinalg::~GptqLinalg() {
  if (solver_ != nullptr) cusolverDnDestroy(solver_);
  if (blas_ != nullptr) cublasDestroy(blas_);
}

std::string GptqLinalg::Init(cudaStream_t stream) {
  if (blas_ == nullptr) LLMC_CUBLAS_TRY(cublasCreate(&blas_));
  LLMC_CUBLAS_TRY(cublasSetStream(blas_, stream));
  // Plain IEEE fp32 SGEMM (no TF32), so the trailing updates track the CPU's.
  LLMC_CUBLAS_TRY(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
  if (solver_ == nullptr) LLMC_CUSOLVER_TRY(cusolverDnCreate(&solver_));
  LLMC_CUSOLVER_TRY(cusolverDnSetStream(solver_, stream));
  stream_ = stream;
  return "";
}

std::string GptqLinalg::InverseHessianFactor(const float* h, int64_t n, const int32_t* perm, const uint8_t* dead,
                                             double damp, bool fp64, void* a, float* u, std::string* failure) {
  if (solver_ == nullptr) return "GptqLinalg::InverseHessianFactor: Init was not called";
  if (n <= 0 || n * n > INT_MAX)
    return "GptqLinalg::InverseHessianFactor: " + std::to_string(n) + " columns exceed cuSOLVER's 32-bit potri";
  failure->clear();
  const dim3 grid(Blocks(n), GridY(n));
  if (fp64) {
    LLMC_TRY_STR(FactorDevice<double>(solver_, stream_, h, n, perm, dead, damp, static_cast<double*>(a), failure));
    if (failure->empty()) UpperToFloatKernel<double><<<grid, kThreads, 0, stream_>>>(static_cast<double*>(a), n, u);
  } else {
    LLMC_TRY_STR(FactorDevice<float>(solver_, stream_, h, n, perm, dead, damp, static_cast<float*>(a), failure));
    if (failure->empty()) UpperToFloatKernel<float><<<grid, kThreads, 0, stream_>>>(static_cast<float*>(a), n, u);
  }
  if (!failure->empty()) IdentityKernel<<<grid, kThreads, 0, stream_>>>(u, n);
  LLMC_CUDA_TRY(cudaGetLastError());
  LLMC_CUDA_TRY(cudaStreamSynchronize(stream_));
  return "";
}

std::string GptqLinalg::TrailingUpdate(const float* err, int64_t rows, int64_t cols, int64_t i1, int64_t count,
                                       const float* u, float* w, const uint8_t* keep, float* tmp) {
  if (blas_ == nullptr) return "GptqLinalg::TrailingUpdate: Init was not called";
  const int64_t i2 = i1 + count, n = cols - i2;
  if (n <= 0 || count <= 0) return "";
  if (rows > INT_MAX || cols > INT_MAX) return "GptqLinalg::TrailingUpdate: " + Shape(rows, cols) + " exceeds int";
  // Column-major view: W^T[i2:, :] (n x rows, ld cols) -= U[i1:i2, i2:]^T (n x count, ld cols) Err^T (count x rows;
  // err is column-major rows x count with ld rows, hence op T).
  const float* ub = u + i1 * cols + i2;
  const int m = static_cast<int>(n), nr = static_cast<int>(rows), k = static_cast<int>(count);
  const int ldu = static_cast<int>(cols), lde = static_cast<int>(rows);
  if (keep == nullptr) {
    const float alpha = -1.0f, beta = 1.0f;
    LLMC_CUBLAS_TRY(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, m, nr, k, &alpha, ub, ldu, err, lde, &beta, w + i2,
                                ldu));
    return "";
  }
  const float alpha = 1.0f, beta = 0.0f;
  LLMC_CUBLAS_TRY(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, m, nr, k, &alpha, ub, ldu, err, lde, &beta, tmp, m));
  MaskedSubtractKernel<<<dim3(Blocks(n), GridY(rows)), kThreads, 0, stream_>>>(w, rows, cols, i2, tmp, keep);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

int64_t GptqBlockScratchFloats(int64_t block_size, int64_t rows, bool keep) {
  return TileBytes(block_size, keep) <= kMaxTileBytes ? 0 : block_size * rows;
}

std::string GptqBlock(const GptqBlockArgs& a, cudaStream_t stream) {
  if (a.rows <= 0 || a.count <= 0) return "";
  const bool global_tile = a.tile != nullptr;
  if (!global_tile && TileBytes(a.count, a.keep != nullptr) > kMaxTileBytes)
    return "GptqBlock: a block of " + std::to_string(a.count) + " columns needs the global tiles";
  const int64_t smem = global_tile ? 0 : TileBytes(a.count, a.keep != nullptr);
  if (smem > 48 * 1024)
    LLMC_CUDA_TRY(cudaFuncSetAttribute(GptqBlockKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  const int64_t ctas = (a.rows + kRowsPerCta - 1) / kRowsPerCta;
  if (ctas > INT_MAX) return "GptqBlock: too many rows";
  GptqBlockKernel<<<static_cast<unsigned>(ctas), kRowsPerCta, static_cast<size_t>(smem), stream>>>(a);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

}  // namespace llmc::cuda
