// The operations of a decoder block on the CPU, in fp32 on row-major buffers. These are the reference the
// CUDA kernels will be compared with; each has a naive counterpart in cpu_ops_test.cc.
//
// Shapes are documented as [rows, cols]. Callers validate shapes (the model code derives every size from a
// validated ModelSpec); the ops only assert them in debug builds. All functions are thread-safe apart from
// the CpuContext they are given.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/model/architecture.h"
#include "engine/model/cpu_context.h"

namespace llmc {

// exp(x) with a relative error below 3e-7 (Cody-Waite range reduction and Cephes' degree-6 polynomial),
// written so loops over it vectorize. x is clamped to [-87.3, 88.3] first, so results stay normal floats: exp
// of anything below -87.3 is ~1.2e-38 instead of 0, of anything above 88.3 ~2.2e38 instead of inf; NaN
// becomes -87.3's.
inline float FastExp(float x) {
  x = x > -87.3f ? x : -87.3f;
  x = x < 88.3f ? x : 88.3f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (y + kRound) - kRound rounds y to the nearest integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;  // in [-126, 127]
  float r = x - n * 0.693359375f;  // x - n ln2, with ln2 split in two so the first product is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale;
}

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for x [rows, dim], weight [dim]. `out` may alias `x`.
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out,
             CpuContext* ctx);

// y [rows, out_features] = x [rows, in_features] * w^T + bias, for w [out_features, in_features] and bias
// [out_features] or nullptr. One multi-threaded OpenBLAS sgemm. `y` must not alias `x`.
void LinearForward(const float* x, int64_t rows, int64_t in_features, const float* w, const float* bias,
                   int64_t out_features, float* y, CpuContext* ctx);

// The rotary inverse frequencies [head_dim / 2] as Hugging Face computes them in fp32:
// 1 / theta^(2i / head_dim), then divided by the linear factor or adjusted by llama3 scaling; longrope:
// 1 / (ext[i] * theta^(2i / head_dim)) with ext the long factors when `long_factors`, else the short ones.
// `head_dim` is the rotary dimension (ModelSpec::rotary_dim()).
std::vector<float> RopeInverseFrequencies(const RopeSpec& rope, int64_t head_dim, bool long_factors = false);

// cos/sin of position * inv_freq for positions [0, max_positions), each [max_positions, head_dim / 2], times
// longrope's attention_factor. A longrope table uses the long factors when max_positions (the sequence length
// it is built for) exceeds original_max_position_embeddings, as transformers chooses by sequence length.
class RopeTable {
 public:
  RopeTable(const RopeSpec& rope, int64_t head_dim, int64_t max_positions);
  int64_t head_dim() const { return head_dim_; }
  int64_t max_positions() const { return max_positions_; }
  bool long_factors() const { return long_factors_; }
  // Whether this table serves sequences of seq_len tokens: long enough and, for longrope, the same factors.
  bool Serves(const RopeSpec& rope, int64_t seq_len) const {
    return seq_len <= max_positions_ && rope.UsesLongFactors(seq_len) == long_factors_;
  }
  const float* cos(int64_t pos) const { return cos_.data() + pos * (head_dim_ / 2); }
  const float* sin(int64_t pos) const { return sin_.data() + pos * (head_dim_ / 2); }

 private:
  int64_t head_dim_;
  int64_t max_positions_;
  bool long_factors_ = false;
  std::vector<float> cos_, sin_;
};

// Rotates x [num_seqs * seq_len, heads * head_stride] in place (HF rotate_half convention over the first
// r = table.head_dim() dimensions of each head: dimension i pairs with i + r/2; the rest of the head, partial
// rotary, is left as is); token t of each sequence has position t. seq_len <= table.max_positions(); head_stride
// 0 means r. `interleaved` (Llama 4): dimension 2i pairs with 2i + 1 instead, (x[2i] + j x[2i+1]) times
// exp(j pos inv_freq[i]).
void ApplyRotary(float* x, int64_t num_seqs, int64_t seq_len, int64_t heads, const RopeTable& table,
                 CpuContext* ctx, int64_t head_stride = 0, bool interleaved = false);

// Grouped-query causal self-attention with softmax(cap(scale * q k^T)) v, where scale is `scale` (0: 1 /
// sqrt(head_dim)) and cap(s) = softcap * tanh(s / softcap) when softcap > 0 (Gemma 2), else s.
// q [num_seqs * seq_len, heads * head_dim], k and v [num_seqs * seq_len, kv_heads * head_dim],
// out [num_seqs * seq_len, heads * head_dim]; query head h reads kv head h / (heads / kv_heads). Token i
// attends to tokens j <= i of its own sequence, with sliding_window > 0 only to j > i - sliding_window, and with
// chunk > 0 (Llama 4's chunked attention) only to j of its own chunk, j / chunk == i / chunk.
void CausalAttention(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t seq_len,
                     int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t sliding_window, float* out,
                     CpuContext* ctx, float scale = 0.0f, float softcap = 0.0f, int64_t chunk = 0);

// out[i] = silu(gate[i]) * up[i] for n elements; silu(x) = x / (1 + exp(-x)). `out` may alias either input.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out, CpuContext* ctx);

// out[i] = gelu_tanh(gate[i]) * up[i], gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in fp32
// (PyTorch's gelu(approximate="tanh")). `out` may alias either input.
void GeluTanhGlu(const float* gate, const float* up, int64_t n, float* out, CpuContext* ctx);

// The gated MLP activation `act`: SwiGlu or GeluTanhGlu.
void GatedActivation(Activation act, const float* gate, const float* up, int64_t n, float* out, CpuContext* ctx);

// x[i] = cap * tanh(x[i] / cap) for n elements, in fp32 (logit softcapping).
void Softcap(float* x, int64_t n, float cap, CpuContext* ctx);

// -log softmax(logits)[target] for one row of `vocab` logits, in double after an fp32 max shift.
double TokenNll(const float* logits, int64_t vocab, int64_t target);

// log softmax over each row of x [rows, vocab], in place (fp32 values, fp64 normalizer).
void LogSoftmaxRows(float* x, int64_t rows, int64_t vocab, CpuContext* ctx);

// Mixture-of-experts dispatch (references of the CUDA GatherRowsDevice / ScatterAddScaledRowsDevice):
// dst [n, cols] = src[rows[i]].
void GatherRows(const float* src, const int32_t* rows, int64_t n, int64_t cols, float* dst);
// dst[dst_rows[i]] += src[src_rows ? src_rows[i] : i] * scales[i] (the product rounded to fp32, then added).
void ScatterAddScaledRows(const float* src, const int32_t* src_rows, const int32_t* dst_rows, const float* scales,
                          int64_t n, int64_t cols, float* dst);

}  // namespace llmc
