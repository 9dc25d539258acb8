// Causal grouped-query attention as cuBLAS GEMMs on tensor cores (Blas::CausalAttentionGemm): scores and
// probabilities of a chunk of query rows are formed in a scratch buffer, unlike the flash kernel of
// attention_kernels.cu, which never forms them but runs on CUDA cores.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

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
// keys k0 + j. Caps the scores, masks what the query cannot see (later keys; keys at or before i - window), and
// replaces the row with its softmax (zeros where masked).
__global__ void MaskedSoftmaxKernel(float* s, int64_t nq, int64_t keys, int64_t i0, int64_t k0, int64_t window,
                                    float softcap) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const int64_t i = i0 + row % nq;
  float* p = s + row * keys;
  // Visible keys: columns [lo, hi) of this row.
  const int64_t hi = keys < i - k0 + 1 ? keys : i - k0 + 1;
  const int64_t lo = window > 0 && i - window + 1 - k0 > 0 ? i - window + 1 - k0 : 0;
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
  if (seq_len <= 0 || heads <= 0) return 0;
  return std::max<int64_t>(0, std::min<int64_t>(seq_len, scratch_elems / (heads * seq_len)));
}

std::string Blas::CausalAttentionGemm(const float* q, const float* k, const float* v, int64_t num_seqs,
                                      int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                      int64_t sliding_window, float scale, float softcap, float* scratch,
                                      int64_t scratch_elems, float* out) {
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
  const int64_t ratio = heads / kv_heads;
  const int64_t q_ld = heads * head_dim, kv_ld = kv_heads * head_dim;
  const float zero = 0.0f, one = 1.0f;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const float* qs = q + s * seq_len * q_ld;
    const float* ks = k + s * seq_len * kv_ld;
    const float* vs = v + s * seq_len * kv_ld;
    float* os = out + s * seq_len * q_ld;
    for (int64_t i0 = 0; i0 < seq_len; i0 += chunk) {
      const int64_t i1 = std::min(seq_len, i0 + chunk), nq = i1 - i0;
      const int64_t k0 = sliding_window > 0 ? std::max<int64_t>(0, i0 - sliding_window + 1) : 0;
      const int64_t keys = i1 - k0;
      // Scores: for query head h = g * ratio + r, s_h^T [keys, nq] (column-major; row-major s_h [nq, keys]) =
      // k_g [keys, hd] q_h^T, one call per r batched over the kv heads g.
      for (int64_t r = 0; r < ratio; ++r)
        LLMC_CUBLAS_TRY(cublasGemmStridedBatchedEx(
            handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(keys), static_cast<int>(nq),
            static_cast<int>(head_dim), &scale, ks + k0 * kv_ld, CUDA_R_32F, static_cast<int>(kv_ld), head_dim,
            qs + i0 * q_ld + r * head_dim, CUDA_R_32F, static_cast<int>(q_ld), ratio * head_dim, &zero,
            scratch + r * nq * keys, CUDA_R_32F, static_cast<int>(keys), ratio * nq * keys,
            static_cast<int>(kv_heads), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
      MaskedSoftmaxKernel<<<static_cast<unsigned>(heads * nq), kSoftmaxThreads, 0, stream_>>>(
          scratch, nq, keys, i0, k0, sliding_window, softcap);
      LLMC_CUDA_TRY(cudaGetLastError());
      // out_h^T [hd, nq] = v_g^T [hd, keys] p_h^T [keys, nq].
      for (int64_t r = 0; r < ratio; ++r)
        LLMC_CUBLAS_TRY(cublasGemmStridedBatchedEx(
            handle_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(head_dim), static_cast<int>(nq),
            static_cast<int>(keys), &one, vs + k0 * kv_ld, CUDA_R_32F, static_cast<int>(kv_ld), head_dim,
            scratch + r * nq * keys, CUDA_R_32F, static_cast<int>(keys), ratio * nq * keys, &zero,
            os + i0 * q_ld + r * head_dim, CUDA_R_32F, static_cast<int>(q_ld), ratio * head_dim,
            static_cast<int>(kv_heads), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    }
  }
  return "";
}

}  // namespace llmc::cuda
