// The GEMM plan of the GPU's tensor-core attention (engine/backend/cuda/attention_plan.h), run on the host: each
// planned GEMM through a loop with cuBLAS's semantics (column-major, op(A), strided batches, beta 0), the masked
// softmax with the same visible-key bounds, against CausalAttention. A wrong offset, stride or leading dimension
// reads other heads, tokens or sequences and differs by O(1); the loop sums in double, so a right plan agrees to
// float rounding. The GPU kernel itself is compared with the CPU in tests/gpu/cuda_decoder_kernels_test.cc.
#include "engine/backend/cuda/attention_plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/model/cpu_context.h"
#include "engine/model/cpu_ops.h"

namespace llmc {
namespace {

using cuda::AttentionChunk;
using cuda::AttentionGemm;
using cuda::AttentionShape;

void RunGemm(const AttentionGemm& g, const float* a, const float* b, float* c) {
  for (int64_t t = 0; t < g.batch; ++t) {
    const float* at = a + g.a_off + t * g.stride_a;
    const float* bt = b + g.b_off + t * g.stride_b;
    float* ct = c + g.c_off + t * g.stride_c;
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) {
        double sum = 0;
        for (int64_t p = 0; p < g.k; ++p)
          sum += double(g.trans_a ? at[p + i * g.lda] : at[i + p * g.lda]) * bt[p + j * g.ldb];
        ct[i + j * g.ldc] = static_cast<float>(g.alpha * sum);
      }
  }
}

void Softmax(float* s, int64_t heads, const AttentionChunk& c, int64_t window, int64_t attn_chunk, float softcap) {
  for (int64_t row = 0; row < heads * c.nq; ++row) {
    float* p = s + row * c.keys;
    int64_t lo = 0, hi = 0;
    cuda::VisibleKeys(c.i0 + row % c.nq, c.k0, c.keys, window, attn_chunk, &lo, &hi);
    ASSERT_LT(lo, hi) << "a query sees no key";
    double m = -INFINITY, sum = 0;
    for (int64_t j = lo; j < hi; ++j) {
      if (softcap > 0) p[j] = softcap * std::tanh(p[j] / softcap);
      m = std::max(m, double(p[j]));
    }
    for (int64_t j = lo; j < hi; ++j) sum += std::exp(p[j] - m);
    for (int64_t j = 0; j < c.keys; ++j) p[j] = j >= lo && j < hi ? static_cast<float>(std::exp(p[j] - m) / sum) : 0.0f;
  }
}

struct Case {
  int64_t seqs, T, heads, kv_heads, hd, window, chunk;
  float scale, softcap;
  int64_t attn_chunk = 0;  // Llama 4's chunked attention
};

TEST(AttentionPlanTest, PlannedGemmsComputeCausalAttention) {
  const Case cases[] = {
      {1, 1, 2, 1, 64, 0, 0, 0, 0},    {2, 17, 4, 2, 16, 0, 3, 0, 0},   {3, 65, 6, 2, 64, 0, 7, 0, 0},
      {1, 130, 4, 1, 32, 8, 7, 0, 0},  {2, 30, 4, 4, 80, 0, 64, 0, 0},  {2, 29, 8, 8, 16, 6, 5, 0, 0},
      {1, 40, 4, 2, 16, 8, 64, 0.0625f, 50}, {2, 70, 3, 1, 18, 0, 0, 0, 0}, {1, 33, 16, 2, 8, 0, 10, 0, 5},
      // Attention chunks: row chunks aligned with them, across them, a window inside them, one key per chunk.
      {2, 29, 4, 2, 16, 0, 8, 0, 0, 8}, {1, 45, 4, 1, 32, 0, 7, 0, 0, 16}, {2, 37, 6, 2, 16, 5, 11, 0, 0, 8},
      {1, 9, 2, 1, 8, 0, 4, 0, 0, 1},
  };
  CpuContext ctx(2);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.seqs << "x" << c.T << " h" << c.heads << "/" << c.kv_heads << " d" << c.hd
                                      << " w" << c.window << " chunk " << c.chunk << " attention chunk "
                                      << c.attn_chunk);
    const int64_t n = c.seqs * c.T;
    std::vector<float> q(n * c.heads * c.hd), k(n * c.kv_heads * c.hd), v(k.size());
    for (auto& x : q) x = 3 * normal(rng);
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    std::vector<float> want(q.size());
    CausalAttention(q.data(), k.data(), v.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window, want.data(), &ctx,
                    c.scale, c.softcap, c.attn_chunk);
    const int64_t scratch_elems = c.heads * c.T * (c.chunk > 0 ? c.chunk : c.T);
    const int64_t rows = cuda::AttentionChunkRowsFor(c.T, c.heads, scratch_elems);
    ASSERT_EQ(rows, c.chunk > 0 ? std::min(c.chunk, c.T) : c.T);
    std::vector<float> scratch(scratch_elems), got(q.size(), std::numeric_limits<float>::quiet_NaN());
    const AttentionShape shape{c.T, c.heads, c.kv_heads, c.hd, c.window, c.attn_chunk};
    const float scale = c.scale > 0 ? c.scale : 1.0f / std::sqrt(static_cast<float>(c.hd));
    int64_t chunks = 0;
    for (int64_t s = 0; s < c.seqs; ++s)
      for (int64_t i0 = 0; i0 < c.T; i0 += rows, ++chunks) {
        const AttentionChunk ch = cuda::MakeAttentionChunk(shape, s, i0, rows);
        ASSERT_LE(c.heads * ch.nq * ch.keys, scratch_elems);
        std::fill(scratch.begin(), scratch.end(), std::numeric_limits<float>::quiet_NaN());
        for (int64_t r = 0; r < c.heads / c.kv_heads; ++r)
          RunGemm(cuda::ScoresGemm(shape, ch, r, scale), k.data(), q.data(), scratch.data());
        Softmax(scratch.data(), c.heads, ch, c.window, c.attn_chunk, c.softcap);
        for (int64_t r = 0; r < c.heads / c.kv_heads; ++r)
          RunGemm(cuda::ValuesGemm(shape, ch, r), v.data(), scratch.data(), got.data());
      }
    EXPECT_EQ(chunks, c.seqs * ((c.T + rows - 1) / rows));
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 2e-5 * (1 + std::fabs(want[i]))) << "at " << i;
  }
}

TEST(AttentionPlanTest, ChunkRowsAndWindowedKeys) {
  EXPECT_EQ(cuda::AttentionChunkRowsFor(2048, 32, int64_t{64} << 20), 1024);
  EXPECT_EQ(cuda::AttentionChunkRowsFor(2048, 64, int64_t{64} << 20), 512);
  EXPECT_EQ(cuda::AttentionChunkRowsFor(16, 2, 1000), 16);  // never more rows than the sequence has
  EXPECT_EQ(cuda::AttentionChunkRowsFor(16, 2, 31), 0);     // not one row of 2 x 16 scores
  const AttentionShape s{100, 4, 2, 8, 10};
  const AttentionChunk c = cuda::MakeAttentionChunk(s, 1, 40, 32);
  EXPECT_EQ(c.nq, 32);
  EXPECT_EQ(c.k0, 31);  // query 40 sees keys 31..40
  EXPECT_EQ(c.keys, 41);
  int64_t lo = 0, hi = 0;
  cuda::VisibleKeys(71, c.k0, c.keys, s.window, s.attn_chunk, &lo, &hi);  // query 71: keys 62..71
  EXPECT_EQ(lo, 62 - 31);
  EXPECT_EQ(hi, 71 - 31 + 1);
  const AttentionChunk last = cuda::MakeAttentionChunk(s, 0, 96, 32);
  EXPECT_EQ(last.nq, 4);
  // Attention chunks of 16: rows 40..71 start in chunk 32..47, so keys from 32; query 71 sees 64..71.
  const AttentionShape a{100, 4, 2, 8, 0, 16};
  const AttentionChunk ac = cuda::MakeAttentionChunk(a, 0, 40, 32);
  EXPECT_EQ(ac.k0, 32);
  EXPECT_EQ(ac.keys, 40);
  cuda::VisibleKeys(71, ac.k0, ac.keys, a.window, a.attn_chunk, &lo, &hi);
  EXPECT_EQ(lo, 64 - 32);
  EXPECT_EQ(hi, 71 - 32 + 1);
  EXPECT_EQ(cuda::FirstVisibleKey(71, 4, 16), 68);  // the window is the tighter bound
  EXPECT_EQ(cuda::FirstVisibleKey(65, 4, 16), 64);  // the chunk is
}

}  // namespace
}  // namespace llmc
