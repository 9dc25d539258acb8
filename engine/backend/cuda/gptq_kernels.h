// CUDA kernels of GPTQ (engine/algo/cuda_gptq.h is the host API; engine/algo/gptq.cc the CPU reference):
// the fake quantization of the integer and fp8 schemes, the inverse-Hessian factor with cuSOLVER, the per-block
// column walk and the trailing cuBLAS update. Plain C++ interface (no Abseil): functions return "" or a message
// naming the failing call. All device pointers; every function launches on `stream` and, unless it says that it
// returns host values, does not synchronize.
//
// The fake quantization below is written once for host and device (FakeQuantValue). On the device it uses
// explicitly rounded IEEE operations (__fdiv_rn, __fmul_rn, ...), so it equals GroupQuantizer::FakeQuant bit for
// bit whatever the compiler's contraction flags; on the host it is plain C++ (the project builds with
// -ffp-contract=off), which the host API uses to check that a quantizer's arithmetic is one this file implements.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#define LLMC_GPTQ_HD __host__ __device__ __forceinline__
#else
#define LLMC_GPTQ_HD inline
#endif

namespace llmc::cuda {

// The quantize-dequantize arithmetic of one scheme (engine/quant/group_quantizer.cc, Arith::Code / Dequant).
struct FakeQuantSpec {
  enum class Kind : int32_t { kInt, kFp8 };  // integer codes in [qmin, qmax]; fp8 e4m3 codes
  enum class Round : int32_t { kNone, kBf16, kF16 };  // the model dtype every intermediate is rounded to
  Kind kind = Kind::kInt;
  Round round = Round::kBf16;
  float qmin = -8, qmax = 7;  // kInt only
  bool asymmetric = false;    // kInt only: codes carry a zero point
};

namespace gptq {

LLMC_GPTQ_HD uint32_t Bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
LLMC_GPTQ_HD float FromBits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
// IEEE round-to-nearest-even operations, never contracted.
LLMC_GPTQ_HD float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
LLMC_GPTQ_HD float Sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
LLMC_GPTQ_HD float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LLMC_GPTQ_HD float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Round half to even to an integer for |x| <= 2^22, as llmc::RoundHalfEvenSmall: (x + 1.5 * 2^23) - 1.5 * 2^23,
// which (unlike rint) turns -0 and small negative values into +0.
LLMC_GPTQ_HD float RoundHalfEvenSmall(float x) {
  const float m = 12582912.0f;
  return Sub(Add(x, m), m);
}
// std::clamp's semantics (v < lo ? lo : hi < v ? hi : v).
LLMC_GPTQ_HD float Clamp(float v, float lo, float hi) { return v < lo ? lo : (hi < v ? hi : v); }

// Rounds to bfloat16 (RNE) as llmc::RoundBF16 does for non-NaN values.
LLMC_GPTQ_HD float RoundBf16(float f) {
  uint32_t u = Bits(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return FromBits(u & 0xffff0000u);
}
// Rounds to IEEE binary16 (RNE, subnormals, overflow to infinity) as llmc::RoundF16 does.
LLMC_GPTQ_HD float RoundF16(float f) {
  const uint32_t u = Bits(f), sign = u & 0x80000000u;
  uint32_t a = u ^ sign;
  if (a >= 0x7f800000u) return f;  // Inf / NaN
  if (a < 0x38800000u) {           // below 2^-14: multiples of 2^-24 (both scalings are exact)
    const float m = RoundHalfEvenSmall(Mul(FromBits(a), 16777216.0f));  // < 2^10
    return FromBits(Bits(Mul(m, 5.9604644775390625e-08f)) | sign);
  }
  a = (a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu;  // 10 mantissa bits
  if (a >= 0x47800000u) a = 0x7f800000u;          // 65536 and up: infinity
  return FromBits(a | sign);
}
LLMC_GPTQ_HD float RoundTo(FakeQuantSpec::Round r, float x) {
  switch (r) {
    case FakeQuantSpec::Round::kBf16:
      return RoundBf16(x);
    case FakeQuantSpec::Round::kF16:
      return RoundF16(x);
    default:
      return x;
  }
}
// llmc::FloatToF8E4M3Clamped: finite |f| <= 448.
LLMC_GPTQ_HD uint32_t F8E4M3Code(float f) {
  uint32_t u = Bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7fffffffu;
  const float m = 12582912.0f;
  const uint32_t sub = static_cast<uint32_t>(static_cast<int32_t>(Sub(Add(Mul(FromBits(u), 512.0f), m), m)));
  const uint32_t norm = ((u + 0x7ffffu + ((u >> 20) & 1u)) >> 20) - (120u << 3);
  uint32_t code = u < 0x3c800000u ? sub : norm;
  code = code > 0x7eu ? 0x7fu : code;
  return sign | code;
}
// llmc::F8E4M3ToFloat.
LLMC_GPTQ_HD float F8E4M3Value(uint32_t b) {
  const uint32_t e = (b >> 3) & 0xfu, mant = b & 0x7u;
  float v;
  if (e == 0xfu && mant == 0x7u) {
    v = FromBits(0x7fc00000u);
  } else if (e == 0) {
    v = Mul(static_cast<float>(mant), 0.001953125f);
  } else {
    v = FromBits(((e + 120u) << 23) | (mant << 20));
  }
  return (b & 0x80u) ? -v : v;
}

// GroupQuantizer::FakeQuant of x with the stored (scale, zero point) of its row and group.
LLMC_GPTQ_HD float FakeQuantValue(const FakeQuantSpec& s, float x, float scale, float zp) {
  const FakeQuantSpec::Round r = s.round;
  x = RoundTo(r, x);
  if (s.kind == FakeQuantSpec::Kind::kInt) {
    float v = RoundTo(r, Div(x, scale));
    if (s.asymmetric) v = RoundTo(r, Add(v, zp));
    const float code = RoundHalfEvenSmall(Clamp(v, s.qmin, s.qmax));
    return RoundTo(r, Mul(RoundTo(r, Sub(code, zp)), scale));
  }
  const uint32_t code = F8E4M3Code(Clamp(RoundTo(r, Div(x, scale)), -448.0f, 448.0f));
  return RoundTo(r, Mul(F8E4M3Value(code), scale));
}

}  // namespace gptq

// ---- scans, permutations, masks ----

// 64-bit device words the scans below need as scratch.
constexpr int kGptqScratchWords = 4;

// Over x[0, n): the index of the first NaN/Inf (-1 when none) and, when `zeros` is not null, the number of exact
// zeros (+0 and -0). Returns host values (synchronizes the stream). `scratch`: kGptqScratchWords device words.
std::string ScanValues(const float* x, int64_t n, unsigned long long* scratch, cudaStream_t stream,
                       int64_t* first_nonfinite, int64_t* zeros);

// Copies the diagonal of h [n, n] (row-major, device) to host_diag[n]. Synchronizes the stream.
std::string CopyDiagonal(const float* h, int64_t n, float* host_diag, cudaStream_t stream);

// Column permutation of a row-major [rows, cols] matrix with perm[cols] (device): gather (inverse = false)
// dst[r, j] = src[r, perm[j]]; scatter (inverse = true) dst[r, perm[j]] = src[r, j]. dst must not alias src.
std::string PermuteColumns(const float* src, int64_t rows, int64_t cols, const int32_t* perm, bool inverse,
                           float* dst, cudaStream_t stream);
std::string PermuteColumns(const uint8_t* src, int64_t rows, int64_t cols, const int32_t* perm, bool inverse,
                           uint8_t* dst, cudaStream_t stream);

// keep[i] = |w[i]| <= 1e-8 ? 0 : 1 (GPTQ's automatic zero preservation; torch.isclose(w, 0)).
std::string KeepNonZero(const float* w, int64_t n, uint8_t* keep, cudaStream_t stream);

// Zeroes the columns c of w [rows, cols] with dead[c] != 0.
std::string ZeroColumns(float* w, int64_t rows, int64_t cols, const uint8_t* dead, cudaStream_t stream);

// ---- the inverse-Hessian factor and the GEMMs ----

// cuBLAS and cuSOLVER handles bound to one stream (engine/algo/inverse_hessian.h's arithmetic on the device).
// Not thread-safe; one per solve.
class GptqLinalg {
 public:
  GptqLinalg() = default;
  ~GptqLinalg();
  GptqLinalg(const GptqLinalg&) = delete;
  GptqLinalg& operator=(const GptqLinalg&) = delete;

  // Creates the handles on the current device, bound to `stream` (cuBLAS in its default math: no TF32).
  std::string Init(cudaStream_t stream);

  // InverseHessianFactor::Compute after validation, in fp64 (`a` holds n*n doubles) or fp32 (n*n floats):
  //   A = H[perm][:, perm] (perm[n] on the device, or null), A_ii = 1 where dead[i] (device, n flags), then
  //   A_ii += (T)damp; L = potrf(A); potri; potrf again (cuSOLVER, lower, column-major = the row-major upper U).
  // On success writes u [n, n] row-major fp32 (upper triangle the factor, strict lower zero) and leaves `failure`
  // empty; when a step fails (not positive definite, or a non-positive / non-finite diagonal of the factor) sets
  // `failure` to InverseHessianFactor's wording and writes the identity to u. Returns an error only for CUDA /
  // library failures. Synchronizes the stream. Needs n*n <= INT_MAX (cuSOLVER's 32-bit potri).
  std::string InverseHessianFactor(const float* h, int64_t n, const int32_t* perm, const uint8_t* dead, double damp,
                                   bool fp64, void* a, float* u, std::string* failure);

  // The trailing update after a block of `count` columns starting at i1, with n = cols - i1 - count > 0:
  //   W[:, i2:] -= Err U[i1:i2, i2:]   (no keep mask: one SGEMM with beta = 1)
  //   W[:, i2:] -= (Err U[i1:i2, i2:]) * K[:, i2:]   (with keep [rows, cols]: SGEMM into tmp [rows, n], then a
  //   masked subtraction, as the CPU does)
  // err [count][rows] (column i1 + k of row r at err[k * rows + r]); u, w, keep [.., cols] row-major.
  std::string TrailingUpdate(const float* err, int64_t rows, int64_t cols, int64_t i1, int64_t count, const float* u,
                             float* w, const uint8_t* keep, float* tmp);

 private:
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// ---- the column walk of one block ----

struct GptqBlockArgs {
  float* w = nullptr;  // [rows, cols] the working weight in solve order; the block's columns become the q values
  int64_t rows = 0, cols = 0;
  int64_t i1 = 0, count = 0;                 // the block: columns [i1, i1 + count)
  const float* u = nullptr;                  // [cols, cols] the factor (upper triangle read)
  const int32_t* col_group = nullptr;        // [cols] quantization group of each solve-order column
  const float* scale = nullptr;              // [rows * num_groups] or [num_groups] (per_row false)
  const float* zero_point = nullptr;         // same layout; null for symmetric / fp8
  int64_t num_groups = 1;
  bool per_row = true;
  FakeQuantSpec spec;
  const uint8_t* keep = nullptr;             // [rows, cols] 0 = never updated; null = everything may change
  float* err = nullptr;                      // [count][rows] out: (w - q) / U_ii
  double* row_loss = nullptr;                // [rows] in/out: += (w - q)^2 / U_ii^2 per column, in column order
  // Global tiles [count][rows] (and the same for the keep mask) when the block does not fit in shared memory
  // (GptqBlockScratchFloats > 0); null otherwise.
  float* tile = nullptr;
  float* keep_tile = nullptr;
};

// Floats of global scratch (each of GptqBlockArgs::tile and keep_tile) a block of `block_size` columns needs:
// 0 when the tile fits in shared memory (block sizes up to several hundred), else block_size * rows.
int64_t GptqBlockScratchFloats(int64_t block_size, int64_t rows, bool keep);

// Walks the block's columns in order, one thread per row (as GptqQuantize's inner loop, which this reproduces
// operation for operation): fake-quantize, err = (w - q) / U_ii, loss, then update the block's later columns.
std::string GptqBlock(const GptqBlockArgs& args, cudaStream_t stream);

}  // namespace llmc::cuda
