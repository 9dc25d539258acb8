// The GEMMs of Blas::CausalAttentionGemm (attention_gemm.cu) as plain numbers, so that the host can check them:
// engine/model/attention_plan_test.cc runs the same plan through a loop-based GEMM with cuBLAS's column-major,
// strided-batched semantics and the same masked softmax, against the CPU attention. No CUDA types here.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__CUDACC__)
#define LLMC_HOST_DEVICE __host__ __device__
#else
#define LLMC_HOST_DEVICE
#endif

namespace llmc::cuda {

// C = alpha op(A) B (beta 0) for `batch` problems, column-major: A is [m, k] (trans_a: stored [k, m]), B [k, n],
// C [m, n]; offsets and strides in elements from the bases named with each.
struct AttentionGemm {
  bool trans_a = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  int64_t a_off = 0, lda = 0, stride_a = 0;
  int64_t b_off = 0, ldb = 0, stride_b = 0;
  int64_t c_off = 0, ldc = 0, stride_c = 0;
  int64_t batch = 0;
};

// Query rows [i0, i0 + nq) of sequence `seq` and the keys [k0, k0 + keys) they can see.
struct AttentionChunk {
  int64_t seq = 0, i0 = 0, nq = 0, k0 = 0, keys = 0;
};

// window > 0: a query sees only the window keys ending at itself (sliding window). attn_chunk > 0: it sees only the
// keys of its own chunk of attn_chunk positions (Llama 4's chunked attention).
struct AttentionShape {
  int64_t seq_len = 0, heads = 0, kv_heads = 0, head_dim = 0, window = 0, attn_chunk = 0;
};

// The first key query i (absolute position) may see: 0, or the sliding window's start, or its chunk's start.
LLMC_HOST_DEVICE inline int64_t FirstVisibleKey(int64_t i, int64_t window, int64_t attn_chunk) {
  int64_t lo = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
  if (attn_chunk > 0 && (i / attn_chunk) * attn_chunk > lo) lo = (i / attn_chunk) * attn_chunk;
  return lo;
}

// Query rows per chunk for a score buffer of `scratch_elems` floats (0: not even one row fits).
inline int64_t AttentionChunkRowsFor(int64_t seq_len, int64_t heads, int64_t scratch_elems) {
  if (seq_len <= 0 || heads <= 0) return 0;
  return std::max<int64_t>(0, std::min<int64_t>(seq_len, scratch_elems / (heads * seq_len)));
}

// The chunk of sequence `seq` that starts at query row i0, `rows` rows at most.
inline AttentionChunk MakeAttentionChunk(const AttentionShape& s, int64_t seq, int64_t i0, int64_t rows) {
  AttentionChunk c;
  c.seq = seq;
  c.i0 = i0;
  const int64_t i1 = std::min(s.seq_len, i0 + rows);
  c.nq = i1 - i0;
  c.k0 = FirstVisibleKey(i0, s.window, s.attn_chunk);  // the first row's bound is the lowest of the chunk
  c.keys = i1 - c.k0;
  return c;
}

// The scores of query heads g * ratio + r (every kv head g) of a chunk: s_h^T [keys, nq] = alpha k_g q_h^T into
// the score buffer, head h at h * nq * keys (row-major s_h [nq, keys]). A: k, B: q, C: the score buffer.
inline AttentionGemm ScoresGemm(const AttentionShape& s, const AttentionChunk& c, int64_t r, float alpha) {
  const int64_t ratio = s.heads / s.kv_heads, q_ld = s.heads * s.head_dim, kv_ld = s.kv_heads * s.head_dim;
  AttentionGemm g;
  g.trans_a = true;
  g.m = c.keys, g.n = c.nq, g.k = s.head_dim, g.alpha = alpha;
  g.a_off = (c.seq * s.seq_len + c.k0) * kv_ld, g.lda = kv_ld, g.stride_a = s.head_dim;
  g.b_off = (c.seq * s.seq_len + c.i0) * q_ld + r * s.head_dim, g.ldb = q_ld, g.stride_b = ratio * s.head_dim;
  g.c_off = r * c.nq * c.keys, g.ldc = c.keys, g.stride_c = ratio * c.nq * c.keys;
  g.batch = s.kv_heads;
  return g;
}

// out_h^T [head_dim, nq] = v_g^T [head_dim, keys] p_h^T [keys, nq] for the same heads. A: v, B: the score
// buffer (now probabilities), C: out.
inline AttentionGemm ValuesGemm(const AttentionShape& s, const AttentionChunk& c, int64_t r) {
  const int64_t ratio = s.heads / s.kv_heads, q_ld = s.heads * s.head_dim, kv_ld = s.kv_heads * s.head_dim;
  AttentionGemm g;
  g.trans_a = false;
  g.m = s.head_dim, g.n = c.nq, g.k = c.keys, g.alpha = 1.0f;
  g.a_off = (c.seq * s.seq_len + c.k0) * kv_ld, g.lda = kv_ld, g.stride_a = s.head_dim;
  g.b_off = r * c.nq * c.keys, g.ldb = c.keys, g.stride_b = ratio * c.nq * c.keys;
  g.c_off = (c.seq * s.seq_len + c.i0) * q_ld + r * s.head_dim, g.ldc = q_ld, g.stride_c = ratio * s.head_dim;
  g.batch = s.kv_heads;
  return g;
}

// The columns [lo, hi) of the score row of query i (absolute position) that it sees, for keys starting at k0:
// causal (j <= i), with a window j > i - window, with attention chunks j in i's chunk.
LLMC_HOST_DEVICE inline void VisibleKeys(int64_t i, int64_t k0, int64_t keys, int64_t window, int64_t attn_chunk,
                                         int64_t* lo, int64_t* hi) {
  *hi = keys < i - k0 + 1 ? keys : i - k0 + 1;
  const int64_t first = FirstVisibleKey(i, window, attn_chunk);
  *lo = first - k0 > 0 ? first - k0 : 0;
}

}  // namespace llmc::cuda
