#include "engine/backend/cuda/blas.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <string>

#include "engine/backend/cuda/cuda_check.h"
#include "engine/backend/cuda/model_kernels.h"

namespace llmc::cuda {

namespace {

// h is column-major with the lower triangle (row >= col) valid: copy it to the upper one.
__global__ void MirrorLowerKernel(float* h, int64_t n) {
  const int64_t col = static_cast<int64_t>(blockIdx.y) * 16 + threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 16 + threadIdx.x;
  if (row < n && col < n && row < col) h[row + col * n] = h[col + row * n];
}

bool FitsInt(int64_t v) { return v >= 0 && v <= INT_MAX; }

}  // namespace

const char* GemmPrecisionName(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::kFp32:
      return "fp32";
    case GemmPrecision::kTf32:
      return "tf32";
    case GemmPrecision::kBf16:
      return "bf16";
  }
  return "?";
}

Blas::~Blas() {
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (handle_ != nullptr) cublasDestroy(handle_);
}

std::string Blas::Init(cudaStream_t stream) {
  if (handle_ == nullptr) LLMC_CUBLAS_TRY(cublasCreate(&handle_));
  LLMC_CUBLAS_TRY(cublasSetStream(handle_, stream));
  // TF32 only where asked for (GemmEx's compute type); plain sgemm stays IEEE fp32.
  LLMC_CUBLAS_TRY(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  stream_ = stream;
  return "";
}

std::string Blas::Linear(GemmPrecision precision, const float* x, const uint16_t* x_bf16, int64_t rows, int64_t in,
                         const void* w, const float* bias, int64_t out, float* y) {
  if (handle_ == nullptr) return "Blas::Linear: Init was not called";
  if (!FitsInt(rows) || !FitsInt(in) || !FitsInt(out) || in == 0 || out == 0)
    return "Blas::Linear: shape [" + std::to_string(rows) + ", " + std::to_string(in) + "] x [" +
           std::to_string(out) + ", " + std::to_string(in) + "]^T is empty or exceeds cuBLAS's int range";
  if (rows == 0) return "";
  const float one = 1.0f, zero = 0.0f;
  // Row-major y [rows, out] is column-major y^T [out, rows] = W [out, in] (column-major W^T, transposed) times
  // x^T [in, rows] (column-major x).
  const int m = static_cast<int>(out), n = static_cast<int>(rows), k = static_cast<int>(in);
  switch (precision) {
    case GemmPrecision::kFp32:
      LLMC_CUBLAS_TRY(cublasSgemm(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, static_cast<const float*>(w), k,
                                  x, k, &zero, y, m));
      break;
    case GemmPrecision::kTf32:
      LLMC_CUBLAS_TRY(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w, CUDA_R_32F, k, x, CUDA_R_32F,
                                   k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
      break;
    case GemmPrecision::kBf16:
      if (x_bf16 == nullptr) return "Blas::Linear: bf16 precision needs the input converted to bf16";
      LLMC_CUBLAS_TRY(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w, CUDA_R_16BF, k, x_bf16,
                                   CUDA_R_16BF, k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      break;
  }
  if (bias != nullptr) LLMC_TRY_STR(AddBiasDevice(y, rows, out, bias, stream_));
  return "";
}

std::string Blas::MirrorLower(float* h, int64_t in) {
  if (in <= 0) return "";
  const dim3 block(16, 16), grid(static_cast<unsigned>((in + 15) / 16), static_cast<unsigned>((in + 15) / 16));
  MirrorLowerKernel<<<grid, block, 0, stream_>>>(h, in);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

// Column-major, a = x^T [in, rows] (lda in), h += alpha a a^T by the GEMMs of PlanXtX (xtx_plan.h): one over the
// whole square up to kXtXTile columns, else the tiles on and below the diagonal, then the mirror
// (unless `mirror` is false).
std::string Blas::TensorCoreXtX(const void* a, cudaDataType type, cublasComputeType_t compute, int64_t rows,
                                int64_t in, float alpha, float* h, bool mirror) {
  const float one = 1.0f;
  const size_t elem = type == CUDA_R_16BF ? 2 : 4;
  const char* base = static_cast<const char*>(a);
  const XtXPlan plan = PlanXtX(in, kXtXTile);
  for (const XtXGemm& g : plan.gemms)
    LLMC_CUBLAS_TRY(cublasGemmEx(handle_, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(g.m), static_cast<int>(g.n),
                                 static_cast<int>(rows), &alpha, base + g.a_off * elem, type, static_cast<int>(in),
                                 base + g.b_off * elem, type, static_cast<int>(in), &one, h + g.c_off, CUDA_R_32F,
                                 static_cast<int>(in), compute, CUBLAS_GEMM_DEFAULT));
  if (!plan.mirror || !mirror) return "";
  return MirrorLower(h, in);
}

std::string Blas::AccumulateXtX(const float* x, int64_t rows, int64_t in, float alpha, float* h,
                                GemmPrecision precision, const uint16_t* x_bf16, bool mirror) {
  if (handle_ == nullptr) return "Blas::AccumulateXtX: Init was not called";
  if (!FitsInt(rows) || !FitsInt(in) || in == 0)
    return "Blas::AccumulateXtX: shape [" + std::to_string(rows) + ", " + std::to_string(in) +
           "] is empty or exceeds cuBLAS's int range";
  if (rows == 0) return "";
  const float one = 1.0f;
  if (precision == GemmPrecision::kBf16 && x_bf16 != nullptr)
    return TensorCoreXtX(x_bf16, CUDA_R_16BF, CUBLAS_COMPUTE_32F, rows, in, alpha, h, mirror);
  if (precision == GemmPrecision::kBf16) {
    const int64_t piece = std::max<int64_t>(1, std::min<int64_t>(rows, kXtXPieceElems / in));
    if (scratch_elems_ < piece * in) {
      // Earlier conversions into the old buffer are queued on the stream: wait for them before freeing it.
      LLMC_CUDA_TRY(cudaStreamSynchronize(stream_));
      if (scratch_ != nullptr) cudaFree(scratch_);
      scratch_ = nullptr;
      scratch_elems_ = 0;
      void* p = nullptr;
      if (cudaMalloc(&p, static_cast<size_t>(piece * in) * sizeof(uint16_t)) != cudaSuccess) {
        cudaGetLastError();
        return "Blas::AccumulateXtX: out of device memory for the bf16 scratch of " +
               std::to_string(piece * in * 2 >> 20) + " MiB";
      }
      scratch_ = static_cast<uint16_t*>(p);
      scratch_elems_ = piece * in;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += piece) {
      const int64_t n = std::min(piece, rows - r0);
      LLMC_TRY_STR(FloatToBf16Device(x + r0 * in, n * in, scratch_, stream_));
      LLMC_TRY_STR(TensorCoreXtX(scratch_, CUDA_R_16BF, CUBLAS_COMPUTE_32F, n, in, alpha, h, /*mirror=*/false));
    }
    const XtXPlan plan = PlanXtX(in, kXtXTile);
    return plan.mirror && mirror ? MirrorLower(h, in) : "";
  }
  if (precision == GemmPrecision::kTf32)  // tensor cores at ~8x SYRK's rate
    return TensorCoreXtX(x, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, rows, in, alpha, h, mirror);
  // Row-major x [rows, in] is column-major A = x^T [in, rows]; A A^T = x^T x.
  LLMC_CUBLAS_TRY(cublasSsyrk(handle_, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(in),
                              static_cast<int>(rows), &alpha, x, static_cast<int>(in), &one, h, static_cast<int>(in)));
  return mirror ? MirrorLower(h, in) : "";
}

}  // namespace llmc::cuda
