// Causal grouped-query attention as cuBLAS GEMMs on tensor cores (Blas::CausalAttentionGemm): scores and
// probabilities of a chunk of query rows are formed in a scratch buffer, unlike the flash kernel of
// attention_kernels.cu, which never forms them but runs on CUDA cores.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "engine/backend/cuda/attention_plan.h"
#include "engine/backend/cuda/blas.h"
#include "engine/backend/cuda/cuda_check.h"

namespace llmc::cuda {

namespace {

constexpr int kSoftmaxThreads = 256;

__device__ float BlockMax(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < (blockDim.x >> 5) ? red[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ float BlockSum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < (blockDim.x >> 5) ? red[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One block per row of scores s [heads * nq, keys] (already scaled): row (h, qi) is query i0 + qi, its columns
// keys k0 + j. Caps the scores, masks what the query cannot see (later keys; keys at or before i - window; keys
// before i's attention chunk), and
// replaces the row with its softmax (zeros where masked).
__global__ void MaskedSoftmaxKernel(float* s, int64_t nq, int64_t keys, int64_t i0, int64_t k0, int64_t window,
                                    int64_t attn_chunk, float softcap) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const int64_t i = i0 + row % nq;
  float* p = s + row * keys;
  int64_t lo = 0, hi = 0;
  VisibleKeys(i, k0, keys, window, attn_chunk, &lo, &hi);
  float m = -INFINITY;
  for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    float v = p[j];
    if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
    p[j] = v;
    m = fmaxf(m, v);
  }
  m = BlockMax(m, red);
  float sum = 0.0f;
  for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    const float e = expf(p[j] - m);
    p[j] = e;
    sum += e;
  }
  sum = BlockSum(sum, red);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < keys; j += blockDim.x) p[j] = (j >= lo && j < hi) ? p[j] * inv : 0.0f;
}

bool FitsInt(int64_t v) { return v >= 0 && v <= INT_MAX; }

}  // namespace

int64_t Blas::AttentionChunkRows(int64_t seq_len, int64_t heads, int64_t scratch_elems) {
  return AttentionChunkRowsFor(seq_len, heads, scratch_elems);
}

namespace {

std::string Run(cublasHandle_t h, const AttentionGemm& g, const float* a, const float* b, float* c) {
  const float zero = 0.0f;
  LLMC_CUBLAS_TRY(cublasGemmStridedBatchedEx(
      h, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(g.m), static_cast<int>(g.n),
      static_cast<int>(g.k), &g.alpha, a + g.a_off, CUDA_R_32F, static_cast<int>(g.lda), g.stride_a, b + g.b_off,
      CUDA_R_32F, static_cast<int>(g.ldb), g.stride_b, &zero, c + g.c_off, CUDA_R_32F, static_cast<int>(g.ldc),
      g.stride_c, static_cast<int>(g.batch), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
  return "";
}

}  // namespace

std::string Blas::CausalAttentionGemm(const float* q, const float* k, const float* v, int64_t num_seqs,
                                      int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                      int64_t sliding_window, float scale, float softcap, float* scratch,
                                      int64_t scratch_elems, float* out, int64_t attn_chunk) {
  if (handle_ == nullptr) return "Blas::CausalAttentionGemm: Init was not called";
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 || seq_len < 0 || num_seqs < 0)
    return "Blas::CausalAttentionGemm: heads " + std::to_string(heads) + " / kv heads " + std::to_string(kv_heads) +
           " / head_dim " + std::to_string(head_dim) + ": heads must be a positive multiple of kv heads";
  if (num_seqs == 0 || seq_len == 0) return "";
  const int64_t chunk = AttentionChunkRows(seq_len, heads, scratch_elems);
  if (chunk < 1)
    return "Blas::CausalAttentionGemm: the scratch of " + std::to_string(scratch_elems) +
           " floats holds no row of scores (needs heads * seq_len = " + std::to_string(heads * seq_len) + ")";
  if (!FitsInt(heads * head_dim) || !FitsInt(seq_len) || !FitsInt(chunk * seq_len))
    return "Blas::CausalAttentionGemm: shape exceeds cuBLAS's int range";
  if (scale == 0.0f) scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  if (attn_chunk < 0) return "Blas::CausalAttentionGemm: negative attention chunk";
  const AttentionShape shape{seq_len, heads, kv_heads, head_dim, sliding_window, attn_chunk};
  const int64_t ratio = heads / kv_heads;
  for (int64_t seq = 0; seq < num_seqs; ++seq)
    for (int64_t i0 = 0; i0 < seq_len; i0 += chunk) {
      const AttentionChunk c = MakeAttentionChunk(shape, seq, i0, chunk);
      // Scores of query heads g * ratio + r, one call per r batched over the kv heads g (attention_plan.h).
      for (int64_t r = 0; r < ratio; ++r) LLMC_TRY_STR(Run(handle_, ScoresGemm(shape, c, r, scale), k, q, scratch));
      MaskedSoftmaxKernel<<<static_cast<unsigned>(heads * c.nq), kSoftmaxThreads, 0, stream_>>>(
          scratch, c.nq, c.keys, c.i0, c.k0, sliding_window, attn_chunk, softcap);
      LLMC_CUDA_TRY(cudaGetLastError());
      for (int64_t r = 0; r < ratio; ++r) LLMC_TRY_STR(Run(handle_, ValuesGemm(shape, c, r), v, scratch, out));
    }
  return "";
}

}  // namespace llmc::cuda
