// Causal grouped-query attention on bf16 tensor cores without a score matrix (FlashAttentionBf16Device,
// attention_kernels.h): each block of W warps takes 16 W query rows of one (sequence, head), walks the key tiles
// they can see, and keeps the softmax online (running row maximum and sum), as flash attention does. Products
// are mma.sync m16n8k16 with bf16 operands and fp32 accumulation: S = Q K^T from ldmatrix fragments of the
// shared-memory tiles, P = exp(S - max) re-packed from the accumulator registers into bf16 A fragments, and
// O += P V with V read through ldmatrix.trans. q/k/v are bf16 in global memory; key and value tiles are copied
// with cp.async into two buffers, the next tile's copy running while the current one is multiplied. The output
// is fp32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "engine/backend/cuda/attention_kernels.h"
#include "engine/backend/cuda/attention_plan.h"
#include "engine/backend/cuda/cuda_check.h"

namespace llmc::cuda {

namespace {

constexpr int kPad = 8;  // bf16 elements of padding per shared-memory row: ldmatrix rows fall in distinct banks

__device__ __forceinline__ int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a b for one m16n8k16 tile (a row-major 16x16, b column-major 16x8, c 16x8 fp32).
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one bf16x2 register, `lo` in the low half (the lower column of a fragment).
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// 16 bytes global -> shared without staging in registers; with `valid` false the destination is zero-filled and
// nothing is read (src must still be a valid address).
__device__ __forceinline__ void CopyAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CopyAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CopyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Rows [0, n) of a [rows, stride] bf16 matrix, columns [0, D), into tile [n][D + kPad] by cp.async; rows at or past
// `valid` become zeros.
template <int D, int kThreads>
__device__ __forceinline__ void StageTile(const uint16_t* src, int64_t stride, int n, int valid,
                                          __nv_bfloat16* tile) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < n * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool ok = r < valid;
    CopyAsync16(tile + r * (D + kPad) + c, ok ? src + r * stride + c : src, ok);
  }
}

// One block of W warps per (sequence, query head, tile of 16 W queries); tiles of BN keys, double-buffered.
template <int D, int BN, int W>
__global__ void __launch_bounds__(32 * W) FlashBf16Kernel(const uint16_t* __restrict__ q,
                                                         const uint16_t* __restrict__ k,
                                                         const uint16_t* __restrict__ v, float* __restrict__ out,
                                                         int64_t seq_len, int64_t heads, int64_t kv_heads,
                                                         int64_t window, int64_t attn_chunk, float scale,
                                                         float softcap) {
  constexpr int kRows = 16 * W, kThreads = 32 * W, kTile = BN * (D + kPad);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* kbuf = qs + kRows * (D + kPad);  // [2][BN][D + kPad]
  __nv_bfloat16* vbuf = kbuf + 2 * kTile;         // [2][BN][D + kPad]

  const int64_t q_tiles = (seq_len + kRows - 1) / kRows;
  // The longest tiles (last queries) first, so that short ones fill the tail.
  const int64_t qt = q_tiles - 1 - static_cast<int64_t>(blockIdx.x) % q_tiles;
  const int64_t sh = static_cast<int64_t>(blockIdx.x) / q_tiles;
  const int64_t h = sh % heads, seq = sh / heads;
  const int64_t kvh = h / (heads / kv_heads);
  const int64_t i0 = qt * kRows;
  const int64_t q_stride = heads * D, kv_stride = kv_heads * D;
  const uint16_t* qb = q + (seq * seq_len + i0) * q_stride + h * D;
  const uint16_t* kb = k + seq * seq_len * kv_stride + kvh * D;
  const uint16_t* vb = v + seq * seq_len * kv_stride + kvh * D;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t row_a = i0 + warp * 16 + g, row_b = row_a + 8;  // this thread's two query rows
  const int64_t lo_a = FirstVisibleKey(row_a, window, attn_chunk), lo_b = FirstVisibleKey(row_b, window, attn_chunk);

  const int64_t key_end = Min64(seq_len, i0 + kRows);  // causal: no key after the last query
  const int64_t key_first = (FirstVisibleKey(i0, window, attn_chunk) / BN) * BN;
  const float log2e = 1.4426950408889634f;
  auto stage_keys = [&](int64_t j0, int buf) {
    const int valid = static_cast<int>(Min64(BN, seq_len - j0));
    StageTile<D, kThreads>(kb + j0 * kv_stride, kv_stride, BN, valid, kbuf + buf * kTile);
    StageTile<D, kThreads>(vb + j0 * kv_stride, kv_stride, BN, valid, vbuf + buf * kTile);
  };
  // Q and the first key tile form the first copy group.
  StageTile<D, kThreads>(qb, q_stride, kRows, static_cast<int>(Min64(kRows, seq_len - i0)), qs);
  stage_keys(key_first, 0);
  CopyAsyncCommit();

  float o[D / 8][4];
#pragma unroll
  for (int d = 0; d < D / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

  int buf = 0;
  for (int64_t j0 = key_first; j0 < key_end; j0 += BN, buf ^= 1) {
    // The next tile's copy goes into the other buffer, last read two iterations ago (the barrier at the end of the
    // previous iteration has passed); an empty group keeps the count uniform on the last tile.
    if (j0 + BN < key_end) stage_keys(j0 + BN, buf ^ 1);
    CopyAsyncCommit();
    CopyAsyncWait<1>();  // everything but the newest group: this tile (and Q) have landed
    __syncthreads();
    const __nv_bfloat16* ks = kbuf + buf * kTile;
    const __nv_bfloat16* vs = vbuf + buf * kTile;

    // S = Q K^T for this warp's 16 rows and BN keys.
    float s[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      LdMatrixX4(SharedAddress(qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * (D + kPad) + kk * 16 +
                               (lane >> 4) * 8),
                 a);
#pragma unroll
      for (int n2 = 0; n2 < BN / 16; ++n2) {
        uint32_t b[4];
        LdMatrixX4(SharedAddress(ks + (n2 * 16 + (lane & 7) + (lane >> 4) * 8) * (D + kPad) + kk * 16 +
                                 ((lane >> 3) & 1) * 8),
                   b);
        Mma(s[2 * n2], a, b[0], b[1]);
        Mma(s[2 * n2 + 1], a, b[2], b[3]);
      }
    }

    // Scale, cap, mask; the tile's row maxima.
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = j0 + n * 8 + 2 * t + (e & 1);
        const int64_t i = e < 2 ? row_a : row_b;
        const int64_t lo = e < 2 ? lo_a : lo_b;
        float x = s[n][e] * scale;
        if (softcap > 0.0f) x = softcap * tanhf(x / softcap);
        x = (j <= i && j >= lo && j < seq_len) ? x : -INFINITY;
        s[n][e] = x;
        if (e < 2)
          mx_a = fmaxf(mx_a, x);
        else
          mx_b = fmaxf(mx_b, x);
      }
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
    }
    const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
    // A row that has seen only masked keys keeps maximum -inf; exponentiate against 0 so that it stays all zeros.
    const float base_a = new_a == -INFINITY ? 0.0f : new_a, base_b = new_b == -INFINITY ? 0.0f : new_b;
    const float alpha_a = exp2f((m_a - base_a) * log2e), alpha_b = exp2f((m_b - base_b) * log2e);
    m_a = new_a;
    m_b = new_b;
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      s[n][0] = exp2f((s[n][0] - base_a) * log2e);
      s[n][1] = exp2f((s[n][1] - base_a) * log2e);
      s[n][2] = exp2f((s[n][2] - base_b) * log2e);
      s[n][3] = exp2f((s[n][3] - base_b) * log2e);
      sum_a += s[n][0] + s[n][1];
      sum_b += s[n][2] + s[n][3];
    }
    l_a = l_a * alpha_a + sum_a;
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      o[d][0] *= alpha_a;
      o[d][1] *= alpha_a;
      o[d][2] *= alpha_b;
      o[d][3] *= alpha_b;
    }

    // O += P V: P's accumulator layout is the A fragment's, two key tiles of 8 per k-step of 16.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[4];
      a[0] = PackBf16(s[2 * kk][0], s[2 * kk][1]);
      a[1] = PackBf16(s[2 * kk][2], s[2 * kk][3]);
      a[2] = PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int d2 = 0; d2 < D / 16; ++d2) {
        uint32_t b[4];
        LdMatrixX4Trans(SharedAddress(vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * (D + kPad) + d2 * 16 +
                                      (lane >> 4) * 8),
                        b);
        Mma(o[2 * d2], a, b[0], b[1]);
        Mma(o[2 * d2 + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // this buffer is free for the copy issued next iteration
  }
  CopyAsyncWait<0>();

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
  // Every real query sees at least itself, so l > 0 for the rows written.
  const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
  float* ob = out + (seq * seq_len) * q_stride + h * D;
#pragma unroll
  for (int d = 0; d < D / 8; ++d) {
    const int c = d * 8 + 2 * t;
    if (row_a < seq_len)
      *reinterpret_cast<float2*>(ob + row_a * q_stride + c) = make_float2(o[d][0] * inv_a, o[d][1] * inv_a);
    if (row_b < seq_len)
      *reinterpret_cast<float2*>(ob + row_b * q_stride + c) = make_float2(o[d][2] * inv_b, o[d][3] * inv_b);
  }
}

template <int D, int BN, int W>
std::string Launch(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t num_seqs, int64_t seq_len,
                   int64_t heads, int64_t kv_heads, int64_t window, float* out, cudaStream_t stream, float scale,
                   float softcap, int64_t attn_chunk) {
  constexpr int kRows = 16 * W;
  constexpr int kSmem = (kRows + 4 * BN) * (D + kPad) * static_cast<int>(sizeof(__nv_bfloat16));
  static_assert(D % 16 == 0 && BN % 16 == 0, "tile shapes");
  if (kSmem > 48 * 1024)
    LLMC_CUDA_TRY(
        cudaFuncSetAttribute(FlashBf16Kernel<D, BN, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const int64_t blocks = num_seqs * heads * ((seq_len + kRows - 1) / kRows);
  if (blocks > INT_MAX) return "FlashAttentionBf16Device: too many query tiles for one launch";
  FlashBf16Kernel<D, BN, W><<<static_cast<unsigned>(blocks), 32 * W, kSmem, stream>>>(
      q, k, v, out, seq_len, heads, kv_heads, window, attn_chunk, scale, softcap);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

}  // namespace

bool FlashAttentionBf16Supports(int64_t head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

std::string FlashAttentionBf16Device(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t num_seqs,
                                     int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     int64_t sliding_window, float* out, cudaStream_t stream, float scale,
                                     float softcap, int64_t attn_chunk) {
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || seq_len < 0 || num_seqs < 0 || sliding_window < 0 ||
      attn_chunk < 0)
    return "FlashAttentionBf16Device: heads " + std::to_string(heads) + " / kv heads " + std::to_string(kv_heads) +
           ", sequence length, window and chunk must be non-negative, heads a positive multiple of kv heads";
  if (!FlashAttentionBf16Supports(head_dim))
    return "FlashAttentionBf16Device: head_dim " + std::to_string(head_dim) + " is not 64, 128 or 256";
  if (num_seqs == 0 || seq_len == 0) return "";
  for (const void* p : {static_cast<const void*>(q), static_cast<const void*>(k), static_cast<const void*>(v),
                        static_cast<const void*>(out)})
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return "FlashAttentionBf16Device: q, k, v and out must be 16-byte aligned";
  int device = 0, major = 0;
  LLMC_CUDA_TRY(cudaGetDevice(&device));
  LLMC_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) return "FlashAttentionBf16Device: bf16 tensor cores need compute capability 8.0 or later";
  if (scale == 0.0f) scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  switch (head_dim) {
    case 64:
      return Launch<64, 64, 8>(q, k, v, num_seqs, seq_len, heads, kv_heads, sliding_window, out, stream, scale, softcap,
                            attn_chunk);
    case 128:
      return Launch<128, 64, 8>(q, k, v, num_seqs, seq_len, heads, kv_heads, sliding_window, out, stream, scale,
                             softcap, attn_chunk);
    default:
      return Launch<256, 32, 4>(q, k, v, num_seqs, seq_len, heads, kv_heads, sliding_window, out, stream, scale,
                             softcap, attn_chunk);
  }
}

}  // namespace llmc::cuda
