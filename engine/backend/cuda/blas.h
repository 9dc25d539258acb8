// cuBLAS for the decoder: the Linear `y = x W^T + b` with fp32 activations, and the Hessian accumulation
// `H += alpha X^T X` of calibration algorithms (GPTQ). Plain C++ interface (no Abseil); errors are returned as
// strings naming the failing call. CPU references: engine/model/cpu_ops.h LinearForward (OpenBLAS sgemm) and the
// naive X^T X in tests/gpu/cuda_decoder_kernels_test.cc.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "engine/backend/cuda/xtx_plan.h"

namespace llmc::cuda {

// How a Linear multiplies. Accumulation is fp32 in every mode.
enum class GemmPrecision {
  kFp32,  // fp32 weights and activations, fp32 FMA (no TF32): tracks the CPU to ~1e-6 relative. The default.
  kTf32,  // fp32 weights and activations, tensor cores in TF32 (10-bit mantissa inputs): ~3e-4 relative.
  kBf16,  // bf16 weights on the device, activations rounded to bf16 per GEMM, fp32 accumulation: ~3e-3.
};
// "fp32", "tf32", "bf16".
const char* GemmPrecisionName(GemmPrecision p);

// A cuBLAS handle bound to one stream. Not thread-safe: one caller at a time (as cuBLAS handles).
class Blas {
 public:
  Blas() = default;
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // Creates the handle on the current device, bound to `stream`. Returns "" or the error.
  std::string Init(cudaStream_t stream);
  cudaStream_t stream() const { return stream_; }

  // y [rows, out] = x [rows, in] W^T (+ bias [out] when not null) with W [out, in] row-major on the device:
  // fp32 for kFp32/kTf32, bf16 bits (uint16) for kBf16. For kBf16, `x_bf16` is x already rounded to bf16
  // ([rows, in], e.g. by FloatToBf16Device; the caller converts once for q/k/v sharing one input) and `x` is
  // not read. `y` must not alias the inputs. Launches on the handle's stream without synchronizing.
  std::string Linear(GemmPrecision precision, const float* x, const uint16_t* x_bf16, int64_t rows, int64_t in,
                     const void* w, const float* bias, int64_t out, float* y);

  // h [in, in] += alpha * x^T x for x [rows, in] (fp32, no TF32; cuBLAS ssyrk on one triangle, then mirrored so
  // `h` stays a full symmetric matrix). `h` must be symmetric on entry (e.g. zeros): only one triangle is read.
  // Launches on the handle's stream without synchronizing.
  // kTf32: tensor cores with TF32 inputs and fp32 accumulation (~3e-4 relative), which is what makes Hessians
  // of long calibration runs cheap; above kXtXTile columns only the lower tiles are multiplied, then mirrored. kBf16: x rounded to bf16 (pieces of at most kXtXPieceElems
  // elements in a scratch buffer the handle keeps) and multiplied on tensor cores with fp32 accumulation: twice
  // TF32's rate, the inputs' rounding (~2e-3 relative per element) averaging out over the tokens.
  // x_bf16 (kBf16 only, may be null): x already rounded to bf16 ([rows, in], e.g. the copy Linear read), multiplied
  // as it is, so x is not read and nothing is converted. mirror false: the strict upper triangle (row < col of the
  // column-major h) is left stale, since only the lower one is accumulated; MirrorLower completes h once after a
  // series of such calls (the per-call mirror reads h with a stride of `in` floats, costly for wide Hessians).
  std::string AccumulateXtX(const float* x, int64_t rows, int64_t in, float alpha, float* h,
                            GemmPrecision precision = GemmPrecision::kFp32, const uint16_t* x_bf16 = nullptr,
                            bool mirror = true);
  // Copies the lower triangle of h [in, in] onto the upper one, on the handle's stream.
  std::string MirrorLower(float* h, int64_t in);

  // Causal grouped-query attention with the semantics and layouts of CausalAttentionDevice (attention_kernels.h),
  // its products on tensor cores (TF32 inputs, fp32 accumulation): per sequence and chunk of query rows, the
  // scores of every query head against the keys the chunk can see (strided batched GEMMs over the kv heads, one
  // call per query head of a group), capped, masked and softmaxed in place (one block per row), then multiplied by
  // v. `scratch` holds `scratch_elems` floats, at least heads * seq_len (one query row); a chunk is
  // AttentionChunkRows rows. Work: the unmasked part of each chunk's rectangle, about half of seq_len^2 per head
  // when chunks are small against seq_len. Launches on the handle's stream without synchronizing.
  std::string CausalAttentionGemm(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t seq_len,
                                  int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t sliding_window,
                                  float scale, float softcap, float* scratch, int64_t scratch_elems, float* out,
                                  int64_t attn_chunk = 0);
  // Query rows per chunk of CausalAttentionGemm for a scratch of `scratch_elems` floats (0: it holds none).
  static int64_t AttentionChunkRows(int64_t seq_len, int64_t heads, int64_t scratch_elems);

  // The bf16 conversion scratch of AccumulateXtX: 64M elements (128 MiB) at most.
  static constexpr int64_t kXtXPieceElems = int64_t{64} << 20;
  // Wider Hessians than this are accumulated on tensor cores tile by tile, only the tiles on and below the
  // diagonal (then mirrored): 4096 columns in 3 of 4 tiles' work, 14336 in 28 of 49.
  static constexpr int64_t kXtXTile = kXtXTileCols;

 private:
  // h += alpha a a^T for column-major a [in, rows] of `type` (lda in), on tensor cores (see kXtXTile).
  std::string TensorCoreXtX(const void* a, cudaDataType type, cublasComputeType_t compute, int64_t rows, int64_t in,
                            float alpha, float* h, bool mirror);

  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  uint16_t* scratch_ = nullptr;  // device, scratch_elems_ bf16 values
  int64_t scratch_elems_ = 0;
};

}  // namespace llmc::cuda
