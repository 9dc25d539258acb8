#include "engine/model/cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace llmc {

namespace {

constexpr double kPi = 3.14159265358979323846;

// Largest element of x[0, n) (n >= 1); eight running maxima so the loop vectorizes.
float RowMax(const float* x, int64_t n) {
  float m[8];
  for (int j = 0; j < 8; ++j) m[j] = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) m[j] = m[j] < x[i + j] ? x[i + j] : m[j];
  float r = m[0];
  for (int j = 1; j < 8; ++j) r = r < m[j] ? m[j] : r;
  for (; i < n; ++i) r = r < x[i] ? x[i] : r;
  return r;
}

// sum over i of exp(x[i] - shift) in fp64, writing each exp to out[i] when out is not null (out may be x).
double SumExpShifted(const float* x, int64_t n, float shift, float* out) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    float e[8];
    for (int j = 0; j < 8; ++j) e[j] = FastExp(x[i + j] - shift);
    for (int j = 0; j < 8; ++j) acc[j] += e[j];
    if (out != nullptr)
      for (int j = 0; j < 8; ++j) out[i + j] = e[j];
  }
  double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) {
    float e = FastExp(x[i] - shift);
    sum += e;
    if (out != nullptr) out[i] = e;
  }
  return sum;
}

}  // namespace

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out,
             CpuContext* ctx) {
  ctx->ParallelFor(
      rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* xr = x + r * dim;
          float* o = out + r * dim;
          double ss = 0;
          for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
          // HF: x * rsqrt(mean(x^2) + eps) in fp32, then weight * result.
          const float inv =
              static_cast<float>(1.0 / std::sqrt(static_cast<float>(ss / dim) + static_cast<double>(eps)));
          for (int64_t i = 0; i < dim; ++i) o[i] = weight[i] * (xr[i] * inv);
        }
      });
}

void LinearForward(const float* x, int64_t rows, int64_t in_features, const float* w, const float* bias,
                   int64_t out_features, float* y, CpuContext* ctx) {
  if (rows == 0) return;
  assert(x != y);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows),
              static_cast<blasint>(out_features), static_cast<blasint>(in_features), 1.0f, x,
              static_cast<blasint>(in_features), w, static_cast<blasint>(in_features), 0.0f, y,
              static_cast<blasint>(out_features));
  if (bias == nullptr) return;
  ctx->ParallelFor(rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(out_features, 1)),
                   [&](int64_t r0, int64_t r1) {
                     for (int64_t r = r0; r < r1; ++r) {
                       float* yr = y + r * out_features;
                       for (int64_t i = 0; i < out_features; ++i) yr[i] += bias[i];
                     }
                   });
}

std::vector<float> RopeInverseFrequencies(const RopeSpec& rope, int64_t head_dim, bool long_factors) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(half);
  const float theta = static_cast<float>(rope.theta);
  for (int64_t i = 0; i < half; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float base = std::pow(theta, exponent);
    if (rope.type == RopeSpec::Type::kLongrope) {
      // transformers: 1.0 / (ext_factors * base**inv_freq_shape), fp32 tensors.
      const std::vector<double>& ext = long_factors ? rope.long_factor : rope.short_factor;
      inv[i] = 1.0f / (static_cast<float>(ext[i]) * base);
    } else {
      inv[i] = 1.0f / base;
    }
  }
  switch (rope.type) {
    case RopeSpec::Type::kDefault:
    case RopeSpec::Type::kLongrope:
      break;
    case RopeSpec::Type::kLinear:
      for (float& f : inv) f = f / static_cast<float>(rope.factor);
      break;
    case RopeSpec::Type::kLlama3: {
      // transformers' _compute_llama3_parameters (fp32 tensors, python-float scalars).
      const double old_ctx = static_cast<double>(rope.original_max_position_embeddings);
      const double low_freq_wavelen = old_ctx / rope.low_freq_factor;
      const double high_freq_wavelen = old_ctx / rope.high_freq_factor;
      const float factor = static_cast<float>(rope.factor);
      for (float& f : inv) {
        const float wavelen = static_cast<float>(2 * kPi) / f;
        float scaled = wavelen > static_cast<float>(low_freq_wavelen) ? f / factor : f;
        const float smooth =
            (static_cast<float>(old_ctx) / wavelen - static_cast<float>(rope.low_freq_factor)) /
            static_cast<float>(rope.high_freq_factor - rope.low_freq_factor);
        const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
        const bool medium = !(wavelen < static_cast<float>(high_freq_wavelen)) &&
                            !(wavelen > static_cast<float>(low_freq_wavelen));
        f = medium ? smoothed : scaled;
      }
      break;
    }
  }
  return inv;
}

RopeTable::RopeTable(const RopeSpec& rope, int64_t head_dim, int64_t max_positions)
    : head_dim_(head_dim), max_positions_(max_positions), long_factors_(rope.UsesLongFactors(max_positions)) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv = RopeInverseFrequencies(rope, head_dim, long_factors_);
  // longrope scales cos and sin (fp32 tensor times a python float).
  const float att = rope.type == RopeSpec::Type::kLongrope ? static_cast<float>(rope.attention_factor) : 1.0f;
  cos_.resize(max_positions * half);
  sin_.resize(max_positions * half);
  for (int64_t p = 0; p < max_positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv[i];  // fp32 product, as HF's fp32 matmul of one term
      cos_[p * half + i] = std::cos(angle);
      sin_[p * half + i] = std::sin(angle);
      if (att != 1.0f) {
        cos_[p * half + i] *= att;
        sin_[p * half + i] *= att;
      }
    }
}

void ApplyRotary(float* x, int64_t num_seqs, int64_t seq_len, int64_t heads, const RopeTable& table,
                 CpuContext* ctx, int64_t head_stride, bool interleaved) {
  const int64_t hd = head_stride > 0 ? head_stride : table.head_dim(), half = table.head_dim() / 2,
                width = heads * hd;
  assert(seq_len <= table.max_positions());
  ctx->ParallelFor(num_seqs * seq_len, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t pos = t % seq_len;
      const float* c = table.cos(pos);
      const float* s = table.sin(pos);
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + t * width + h * hd;
        if (interleaved) {
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c[i] - b * s[i];
            v[2 * i + 1] = a * s[i] + b * c[i];
          }
          continue;
        }
        for (int64_t i = 0; i < half; ++i) {
          // out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]; cos/sin repeat over both
          // halves.
          const float a = v[i], b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  });
}

void CausalAttention(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t seq_len,
                     int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t sliding_window, float* out,
                     CpuContext* ctx, float scale_arg, float softcap, int64_t chunk) {
  const int64_t T = seq_len, hd = head_dim;
  const int64_t q_width = heads * hd, kv_width = kv_heads * hd, group = heads / kv_heads;
  // Queries are processed in blocks of kRows rows so scratch stays [kRows, T] whatever the sequence length.
  constexpr int64_t kRows = 128;
  const int64_t blocks = (T + kRows - 1) / kRows;
  const float scale = scale_arg > 0 ? scale_arg : 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t tasks = num_seqs * heads * blocks;
  ctx->ParallelForSerialBlas(tasks, 1, [&](int64_t task0, int64_t task1) {
    std::vector<float> scores;
    for (int64_t task = task0; task < task1; ++task) {
      // Largest blocks first within a (sequence, head) pair so the dynamic schedule ends evenly.
      const int64_t b = blocks - 1 - task % blocks;
      const int64_t h = (task / blocks) % heads;
      const int64_t s = task / (blocks * heads);
      const int64_t kvh = h / group;
      const int64_t r0 = b * kRows, r1 = std::min(T, r0 + kRows), rows = r1 - r0;
      // Keys any row of the block can see: [k0, r1).
      // The first key row i may see: the window's and the chunk's limits (both non-decreasing in i).
      auto first_key = [&](int64_t i) {
        int64_t lo = sliding_window > 0 ? std::max<int64_t>(0, i - sliding_window + 1) : 0;
        if (chunk > 0) lo = std::max(lo, i / chunk * chunk);
        return lo;
      };
      const int64_t k0 = first_key(r0);
      const int64_t keys = r1 - k0;
      scores.resize(rows * keys);
      const float* qb = q + (s * T + r0) * q_width + h * hd;
      const float* kb = k + (s * T + k0) * kv_width + kvh * hd;
      const float* vb = v + (s * T + k0) * kv_width + kvh * hd;
      // scores [rows, keys] = scale * q_block k_block^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows),
                  static_cast<blasint>(keys), static_cast<blasint>(hd), scale, qb,
                  static_cast<blasint>(q_width), kb, static_cast<blasint>(kv_width), 0.0f, scores.data(),
                  static_cast<blasint>(keys));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = r0 + r;
        // Visible keys of row i: [lo, i] (absolute), columns [lo - k0, i - k0].
        const int64_t lo = first_key(i);
        float* sr = scores.data() + r * keys;
        const int64_t c0 = lo - k0, c1 = i - k0 + 1;
        if (softcap > 0)
          for (int64_t c = c0; c < c1; ++c) sr[c] = std::tanh(sr[c] / softcap) * softcap;
        const float mx = RowMax(sr + c0, c1 - c0);
        const double sum = SumExpShifted(sr + c0, c1 - c0, mx, sr + c0);
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t c = 0; c < c0; ++c) sr[c] = 0.0f;
        for (int64_t c = c0; c < c1; ++c) sr[c] *= inv;
        for (int64_t c = c1; c < keys; ++c) sr[c] = 0.0f;
      }
      // out_block [rows, hd] = probs [rows, keys] v_block [keys, hd]
      float* ob = out + (s * T + r0) * q_width + h * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows),
                  static_cast<blasint>(hd), static_cast<blasint>(keys), 1.0f, scores.data(),
                  static_cast<blasint>(keys), vb, static_cast<blasint>(kv_width), 0.0f, ob,
                  static_cast<blasint>(q_width));
    }
  });
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out, CpuContext* ctx) {
  ctx->ParallelFor(n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + FastExp(-g)) * up[i];
    }
  });
}

void GeluTanhGlu(const float* gate, const float* up, int64_t n, float* out, CpuContext* ctx) {
  ctx->ParallelFor(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float x = gate[i];
      const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      out[i] = 0.5f * x * (1.0f + std::tanh(inner)) * up[i];
    }
  });
}

void GatedActivation(Activation act, const float* gate, const float* up, int64_t n, float* out, CpuContext* ctx) {
  if (act == Activation::kGeluTanh) {
    GeluTanhGlu(gate, up, n, out, ctx);
  } else {
    SwiGlu(gate, up, n, out, ctx);
  }
}

void Softcap(float* x, int64_t n, float cap, CpuContext* ctx) {
  ctx->ParallelFor(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = std::tanh(x[i] / cap) * cap;
  });
}

double TokenNll(const float* logits, int64_t vocab, int64_t target) {
  const float mx = RowMax(logits, vocab);
  const double sum = SumExpShifted(logits, vocab, mx, nullptr);
  return std::log(sum) - static_cast<double>(logits[target] - mx);
}

void LogSoftmaxRows(float* x, int64_t rows, int64_t vocab, CpuContext* ctx) {
  ctx->ParallelFor(rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * vocab;
      const float mx = RowMax(xr, vocab);
      const double sum = SumExpShifted(xr, vocab, mx, nullptr);
      const float lse = static_cast<float>(std::log(sum));
      for (int64_t i = 0; i < vocab; ++i) xr[i] = (xr[i] - mx) - lse;
    }
  });
}

void GatherRows(const float* src, const int32_t* rows, int64_t n, int64_t cols, float* dst) {
  for (int64_t i = 0; i < n; ++i) std::copy(src + rows[i] * cols, src + (rows[i] + 1) * cols, dst + i * cols);
}

void ScatterAddScaledRows(const float* src, const int32_t* src_rows, const int32_t* dst_rows, const float* scales,
                          int64_t n, int64_t cols, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const float* s = src + (src_rows != nullptr ? src_rows[i] : i) * cols;
    float* d = dst + static_cast<int64_t>(dst_rows[i]) * cols;
    const float w = scales[i];
    for (int64_t c = 0; c < cols; ++c) d[c] += s[c] * w;
  }
}

}  // namespace llmc
