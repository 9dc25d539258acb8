#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "engine/backend/cuda/attention_kernels.h"
#include "engine/backend/cuda/attention_plan.h"
#include "engine/backend/cuda/cuda_check.h"

namespace llmc::cuda {

namespace {

// Tiles: kBr queries x kBc keys per step, 256 threads as 16 x 16 (ty, tx). Thread (ty, tx) owns query rows
// ty + 16 i (i < 4); for the scores, key columns tx + 16 j (j < 4); for the output, the 4 dimensions starting at
// 64 j + 4 tx (j < D / 64). The 16 threads of one ty sit in one half-warp, so row reductions are 4 shuffles.
// Shared-memory rows are padded by 4 floats: 16-byte loads along a row, and rows 4 banks apart (no conflicts
// for the 8 threads of a 16-byte access phase).
constexpr int kBr = 64;
constexpr int kBc = 64;
constexpr int kThreads = 256;
constexpr int kRowsPerThread = kBr / 16;
constexpr int kColsPerThread = kBc / 16;
constexpr int kPad = 4;

template <int D>
constexpr size_t SharedBytes() {
  // Q tile [kBr][D + 4], K or V tile [kBc][D + 4] (one buffer, reused), P tile [kBr][kBc + 4].
  return sizeof(float) * (kBr * (D + kPad) + kBc * (D + kPad) + kBr * (kBc + kPad));
}

// Loads rows [row0, row0 + N) of one head (`head_dim` values at src + row * stride) into tile [N][D + 4],
// zero-filling rows past `valid` and dimensions past head_dim. kVec: 16-byte loads (head_dim % 4 == 0, and the
// row starts 16-byte aligned, which the caller checks).
template <int D, int N, bool kVec>
__device__ __forceinline__ void LoadTile(const float* __restrict__ src, int64_t stride, int64_t row0, int64_t valid,
                                         int head_dim, float* tile) {
  if constexpr (kVec) {
    for (int idx = threadIdx.x; idx < N * D / 4; idx += kThreads) {
      const int r = idx / (D / 4), d = (idx % (D / 4)) * 4;
      const int64_t row = row0 + r;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (row < valid && d < head_dim) v = *reinterpret_cast<const float4*>(src + row * stride + d);
      *reinterpret_cast<float4*>(tile + r * (D + kPad) + d) = v;
    }
  } else {
    for (int idx = threadIdx.x; idx < N * D; idx += kThreads) {
      const int r = idx / D, d = idx % D;
      const int64_t row = row0 + r;
      tile[r * (D + kPad) + d] = (row < valid && d < head_dim) ? src[row * stride + d] : 0.0f;
    }
  }
}

__device__ __forceinline__ float Dot4(float4 a, float4 b, float acc) {
  acc = __fmaf_rn(a.x, b.x, acc);
  acc = __fmaf_rn(a.y, b.y, acc);
  acc = __fmaf_rn(a.z, b.z, acc);
  return __fmaf_rn(a.w, b.w, acc);
}

__device__ __forceinline__ float Lane(float4 v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }

template <int D, bool kVec>
__global__ void __launch_bounds__(kThreads) FlashAttentionKernel(const float* __restrict__ q,
                                                                 const float* __restrict__ k,
                                                                 const float* __restrict__ v, int64_t T, int heads,
                                                                 int kv_heads, int head_dim, int64_t window,
                                                                 int64_t attn_chunk, float scale, float softcap,
                                                                 float* __restrict__ out) {
  static_assert(D % 64 == 0, "D must be a multiple of 64");
  constexpr int kDGroups = D / 64;  // float4 output columns per thread
  constexpr int kQS = D + kPad, kPS = kBc + kPad;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* qs = smem;              // [kBr][kQS]
  float* kvs = qs + kBr * kQS;   // [kBc][kQS]
  float* ps = kvs + kBc * kQS;   // [kBr][kPS]

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t seq = blockIdx.x / heads;
  const int h = blockIdx.x % heads;
  const int kvh = h / (heads / kv_heads);
  // The largest query tiles (most keys) are scheduled first: blockIdx.y counts down from the last tile.
  const int64_t r0 = (static_cast<int64_t>(gridDim.y) - 1 - blockIdx.y) * kBr;
  const int64_t q_stride = static_cast<int64_t>(heads) * head_dim, kv_stride = static_cast<int64_t>(kv_heads) * head_dim;
  const float* qb = q + seq * T * q_stride + static_cast<int64_t>(h) * head_dim;
  const float* kb = k + seq * T * kv_stride + static_cast<int64_t>(kvh) * head_dim;
  const float* vb = v + seq * T * kv_stride + static_cast<int64_t>(kvh) * head_dim;

  LoadTile<D, kBr, kVec>(qb, q_stride, r0, T, head_dim, qs);

  float m[kRowsPerThread], l[kRowsPerThread], o[kRowsPerThread][kDGroups * 4];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < kDGroups * 4; ++j) o[i][j] = 0.0f;
  }

  const int64_t r_last = (T < r0 + kBr ? T : r0 + kBr) - 1;  // last real query row of the tile
  const int64_t k_begin = FirstVisibleKey(r0, window, attn_chunk);  // the tile's first row has the lowest bound
  for (int64_t c0 = k_begin; c0 <= r_last; c0 += kBc) {
    __syncthreads();  // the previous step's readers of kvs and ps are done (and qs is loaded, first time)
    LoadTile<D, kBc, kVec>(kb, kv_stride, c0, T, head_dim, kvs);
    __syncthreads();
    float s[kRowsPerThread][kColsPerThread];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) s[i][j] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      float4 a[kRowsPerThread], b[kColsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) a[i] = *reinterpret_cast<const float4*>(qs + (ty + 16 * i) * kQS + d);
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) b[j] = *reinterpret_cast<const float4*>(kvs + (tx + 16 * j) * kQS + d);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) s[i][j] = Dot4(a[i], b[j], s[i][j]);
    }
    // Mask, online softmax, P to shared memory.
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int64_t qi = r0 + ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) {
        const int64_t kj = c0 + tx + 16 * j;
        const bool visible = kj <= qi && kj < T && (window <= 0 || kj > qi - window) &&
                             (attn_chunk <= 0 || kj >= (qi / attn_chunk) * attn_chunk);
        float sc = s[i][j] * scale;
        if (softcap > 0.0f) sc = tanhf(sc / softcap) * softcap;
        s[i][j] = visible ? sc : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      // A row that has seen no visible key yet (m_new = -inf) keeps zero weight and no rescaling.
      const float alpha = m_new == -INFINITY ? 1.0f : expf(m[i] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) {
        const float p = s[i][j] == -INFINITY ? 0.0f : expf(s[i][j] - m_new);
        sum += p;
        ps[(ty + 16 * i) * kPS + tx + 16 * j] = p;
      }
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      l[i] = l[i] * alpha + sum;
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < kDGroups * 4; ++j) o[i][j] *= alpha;
    }
    __syncthreads();  // scores done with K; P complete
    LoadTile<D, kBc, kVec>(vb, kv_stride, c0, T, head_dim, kvs);
    __syncthreads();
#pragma unroll 2
    for (int c = 0; c < kBc; c += 4) {
      float4 p4[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) p4[i] = *reinterpret_cast<const float4*>(ps + (ty + 16 * i) * kPS + c);
#pragma unroll
      for (int cc = 0; cc < 4; ++cc) {
        float4 v4[kDGroups];
#pragma unroll
        for (int j = 0; j < kDGroups; ++j)
          v4[j] = *reinterpret_cast<const float4*>(kvs + (c + cc) * kQS + 64 * j + 4 * tx);
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          const float p = Lane(p4[i], cc);
#pragma unroll
          for (int j = 0; j < kDGroups; ++j) {
            o[i][4 * j + 0] = __fmaf_rn(p, v4[j].x, o[i][4 * j + 0]);
            o[i][4 * j + 1] = __fmaf_rn(p, v4[j].y, o[i][4 * j + 1]);
            o[i][4 * j + 2] = __fmaf_rn(p, v4[j].z, o[i][4 * j + 2]);
            o[i][4 * j + 3] = __fmaf_rn(p, v4[j].w, o[i][4 * j + 3]);
          }
        }
      }
    }
  }
  float* ob = out + seq * T * q_stride + static_cast<int64_t>(h) * head_dim;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t qi = r0 + ty + 16 * i;
    if (qi >= T) continue;
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int j = 0; j < kDGroups; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 64 * j + 4 * tx + e;
        if (d < head_dim) ob[qi * q_stride + d] = o[i][4 * j + e] * inv;
      }
  }
}

template <int D, bool kVec>
std::string LaunchVec(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t T, int64_t heads,
                      int64_t kv_heads, int64_t head_dim, int64_t window, int64_t attn_chunk, float scale,
                      float softcap, float* out, cudaStream_t stream) {
  constexpr size_t smem = SharedBytes<D>();
  LLMC_CUDA_TRY(cudaFuncSetAttribute(FlashAttentionKernel<D, kVec>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(num_seqs * heads), static_cast<unsigned>((T + kBr - 1) / kBr));
  FlashAttentionKernel<D, kVec><<<grid, kThreads, smem, stream>>>(q, k, v, T, static_cast<int>(heads),
                                                                  static_cast<int>(kv_heads),
                                                                  static_cast<int>(head_dim), window, attn_chunk,
                                                                  scale, softcap,
                                                                  out);
  LLMC_CUDA_TRY(cudaGetLastError());
  return "";
}

template <int D>
std::string Launch(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t T, int64_t heads,
                   int64_t kv_heads, int64_t head_dim, int64_t window, int64_t attn_chunk, float scale,
                   float softcap, float* out, cudaStream_t stream) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (head_dim % 4 == 0 && aligned(q) && aligned(k) && aligned(v))
    return LaunchVec<D, true>(q, k, v, num_seqs, T, heads, kv_heads, head_dim, window, attn_chunk, scale, softcap,
                              out, stream);
  return LaunchVec<D, false>(q, k, v, num_seqs, T, heads, kv_heads, head_dim, window, attn_chunk, scale, softcap, out,
                             stream);
}

}  // namespace

std::string CausalAttentionDevice(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t seq_len,
                                  int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t sliding_window,
                                  float* out, cudaStream_t stream, float scale, float softcap, int64_t attn_chunk) {
  if (num_seqs < 0 || seq_len < 1 || heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 1)
    return "CausalAttentionDevice: invalid shape (heads must be a positive multiple of kv_heads)";
  if (head_dim > 256)
    return "CausalAttentionDevice: head_dim " + std::to_string(head_dim) + " is above the supported 256";
  if (num_seqs * heads > 0x7fffffff || (seq_len + kBr - 1) / kBr > 65535)
    return "CausalAttentionDevice: too many sequences x heads or too long a sequence for one launch";
  if (num_seqs == 0) return "";
  if (!(scale > 0.0f)) scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  if (attn_chunk < 0) return "CausalAttentionDevice: negative attention chunk";
  const int64_t w = sliding_window, c = attn_chunk;
  if (head_dim <= 64)
    return Launch<64>(q, k, v, num_seqs, seq_len, heads, kv_heads, head_dim, w, c, scale, softcap, out, stream);
  if (head_dim <= 128)
    return Launch<128>(q, k, v, num_seqs, seq_len, heads, kv_heads, head_dim, w, c, scale, softcap, out, stream);
  return Launch<256>(q, k, v, num_seqs, seq_len, heads, kv_heads, head_dim, w, c, scale, softcap, out, stream);
}

}  // namespace llmc::cuda
