// Each CPU op against a naive fp64 reference on awkward sizes.
#include "engine/model/cpu_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <limits>
#include <vector>

#include "engine/model/model_test_util.h"

namespace llmc {
namespace {

using testing_util::RandomVector;

// fp32 ops against fp64 references: relative error of a few fp32 ulps per accumulated term. The named
// tolerances below are |got - want| <= kTol * (1 + |want|) unless a test says otherwise.
constexpr double kTol = 2e-5;

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double tol,
                 const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(got[i] - want[i]) / (1.0 + std::fabs(want[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": worst at " << at << " got " << got[at] << " want " << want[at];
}

class CpuOpsTest : public ::testing::TestWithParam<int> {
 protected:
  CpuContext ctx_{GetParam()};
};

TEST_P(CpuOpsTest, RmsNormMatchesReference) {
  for (int64_t dim : {1, 17, 1025}) {
    const int64_t rows = 19;
    auto x = RandomVector(rows * dim, 1, -3, 3);
    auto w = RandomVector(dim, 2, 0.5f, 1.5f);
    const float eps = 1e-5f;
    std::vector<double> want(rows * dim);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      double inv = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; ++i) want[r * dim + i] = w[i] * x[r * dim + i] * inv;
    }
    std::vector<float> out(rows * dim);
    RmsNorm(x.data(), rows, dim, w.data(), eps, out.data(), &ctx_);
    ExpectClose(out, want, kTol, "RmsNorm");
    RmsNorm(x.data(), rows, dim, w.data(), eps, x.data(), &ctx_);  // in place
    EXPECT_EQ(x, out);
  }
}

TEST_P(CpuOpsTest, LinearMatchesReference) {
  const int64_t rows = 17, in = 129, out = 33;
  auto x = RandomVector(rows * in, 3);
  auto w = RandomVector(out * in, 4);
  auto b = RandomVector(out, 5);
  for (bool bias : {false, true}) {
    std::vector<double> want(rows * out);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = bias ? b[o] : 0.0;
        for (int64_t i = 0; i < in; ++i) s += double(x[r * in + i]) * w[o * in + i];
        want[r * out + o] = s;
      }
    std::vector<float> y(rows * out);
    LinearForward(x.data(), rows, in, w.data(), bias ? b.data() : nullptr, out, y.data(), &ctx_);
    ExpectClose(y, want, 1e-5 * std::sqrt(double(in)), bias ? "Linear+bias" : "Linear");
  }
}

// transformers' rope init, written out in fp64.
std::vector<double> ReferenceInvFreq(const RopeSpec& r, int64_t head_dim) {
  std::vector<double> inv(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) inv[i] = 1.0 / std::pow(r.theta, double(2 * i) / head_dim);
  if (r.type == RopeSpec::Type::kLinear)
    for (double& f : inv) f /= r.factor;
  if (r.type == RopeSpec::Type::kLlama3) {
    const double pi = 3.14159265358979323846;
    const double low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
    const double high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
    for (double& f : inv) {
      double wavelen = 2 * pi / f;
      if (wavelen < high_wavelen) continue;  // high frequency: unchanged
      if (wavelen > low_wavelen) {           // low frequency: divided by factor
        f /= r.factor;
        continue;
      }
      double smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor) /
                      (r.high_freq_factor - r.low_freq_factor);
      f = (1 - smooth) * f / r.factor + smooth * f;  // in between: interpolated
    }
  }
  return inv;
}

TEST(RopeTest, InverseFrequenciesDefaultLinearLlama3) {
  RopeSpec def;
  def.theta = 500000.0;
  RopeSpec lin = def;
  lin.type = RopeSpec::Type::kLinear;
  lin.factor = 4.0;
  RopeSpec l3 = def;
  l3.type = RopeSpec::Type::kLlama3;
  l3.factor = 8.0;
  l3.low_freq_factor = 1.0;
  l3.high_freq_factor = 4.0;
  l3.original_max_position_embeddings = 8192;
  for (const RopeSpec& r : {def, lin, l3}) {
    for (int64_t hd : {2, 10, 128}) {
      auto got = RopeInverseFrequencies(r, hd);
      auto want = ReferenceInvFreq(r, hd);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6 * want[i]) << hd << " " << i;
    }
  }
  // Llama-3.1's parameters put head_dim 128's frequencies in all three regimes.
  auto base = RopeInverseFrequencies(def, 128), scaled = RopeInverseFrequencies(l3, 128);
  int same = 0, divided = 0, between = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    if (scaled[i] == base[i])
      ++same;
    else if (std::fabs(scaled[i] - base[i] / 8) <= 1e-6 * base[i])
      ++divided;
    else
      ++between;
  }
  EXPECT_GT(same, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(between, 0);
}

TEST_P(CpuOpsTest, RotaryMatchesReference) {
  const int64_t seqs = 3, T = 19, heads = 3, hd = 10, half = hd / 2;
  RopeSpec r;
  r.type = RopeSpec::Type::kLlama3;
  r.factor = 8;
  r.low_freq_factor = 1;
  r.high_freq_factor = 4;
  r.original_max_position_embeddings = 16;
  RopeTable table(r, hd, 32);
  auto x = RandomVector(seqs * T * heads * hd, 6);
  auto inv = ReferenceInvFreq(r, hd);
  std::vector<double> want(x.size());
  for (int64_t s = 0; s < seqs; ++s)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = ((s * T + t) * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          // Pair (i, i + half) rotated by angle t * inv_freq[i].
          double a = x[base + i], b = x[base + i + half], ang = t * inv[i];
          want[base + i] = a * std::cos(ang) - b * std::sin(ang);
          want[base + i + half] = b * std::cos(ang) + a * std::sin(ang);
        }
      }
  ApplyRotary(x.data(), seqs, T, heads, table, &ctx_);
  ExpectClose(x, want, 1e-5, "ApplyRotary");
}

// Llama 4's rotation: pairs (2i, 2i + 1) as complex numbers times exp(j t inv_freq[i]).
TEST_P(CpuOpsTest, InterleavedRotaryMatchesReference) {
  const int64_t seqs = 2, T = 23, heads = 3, hd = 12, half = hd / 2;
  RopeSpec r;
  r.theta = 500000.0;
  RopeTable table(r, hd, 32);
  auto x = RandomVector(seqs * T * heads * hd, 16);
  auto inv = ReferenceInvFreq(r, hd);
  std::vector<double> want(x.size());
  for (int64_t s = 0; s < seqs; ++s)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = ((s * T + t) * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const std::complex<double> z(x[base + 2 * i], x[base + 2 * i + 1]);
          const std::complex<double> w = z * std::polar(1.0, t * inv[i]);
          want[base + 2 * i] = w.real();
          want[base + 2 * i + 1] = w.imag();
        }
      }
  ApplyRotary(x.data(), seqs, T, heads, table, &ctx_, 0, /*interleaved=*/true);
  ExpectClose(x, want, 1e-5, "ApplyRotary interleaved");
}

// Naive attention in fp64: explicit causal (and window) mask, softmax, weighted sum; kv head = h / group.
std::vector<double> ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k,
                                       const std::vector<float>& v, int64_t seqs, int64_t T, int64_t heads,
                                       int64_t kv_heads, int64_t hd, int64_t window, int64_t chunk = 0) {
  std::vector<double> out(seqs * T * heads * hd);
  const int64_t group = heads / kv_heads;
  for (int64_t s = 0; s < seqs; ++s)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> p(T, 0.0);
        double mx = -1e300;
        for (int64_t j = 0; j < T; ++j) {
          bool visible = j <= i && (window == 0 || i - j < window) && (chunk == 0 || j / chunk == i / chunk);
          if (!visible) continue;
          double d = 0;
          for (int64_t c = 0; c < hd; ++c)
            d += double(q[((s * T + i) * heads + h) * hd + c]) *
                 k[((s * T + j) * kv_heads + h / group) * hd + c];
          p[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < T; ++j) {
          bool visible = j <= i && (window == 0 || i - j < window) && (chunk == 0 || j / chunk == i / chunk);
          p[j] = visible ? std::exp(p[j] - mx) : 0.0;
          sum += p[j];
        }
        for (int64_t c = 0; c < hd; ++c) {
          double o = 0;
          for (int64_t j = 0; j < T; ++j) o += p[j] / sum * v[((s * T + j) * kv_heads + h / group) * hd + c];
          out[((s * T + i) * heads + h) * hd + c] = o;
        }
      }
  return out;
}

TEST_P(CpuOpsTest, AttentionMatchesReferenceGqaMhaMqaAndWindow) {
  struct Case {
    int64_t seqs, T, heads, kv_heads, hd, window;
  };
  // T = 131 crosses the 128-row query blocks; 257 two of them; windows shorter and longer than a block.
  const Case cases[] = {{2, 131, 6, 2, 24, 0},  {1, 257, 4, 4, 16, 0},   {3, 37, 5, 1, 8, 0},
                        {2, 131, 6, 3, 24, 17}, {1, 257, 2, 1, 16, 200}, {1, 1, 2, 2, 4, 0}};
  for (const Case& c : cases) {
    auto q = RandomVector(c.seqs * c.T * c.heads * c.hd, 7, -2, 2);
    auto k = RandomVector(c.seqs * c.T * c.kv_heads * c.hd, 8, -2, 2);
    auto v = RandomVector(c.seqs * c.T * c.kv_heads * c.hd, 9);
    std::vector<float> out(q.size(), -7.0f);
    CausalAttention(q.data(), k.data(), v.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window,
                    out.data(), &ctx_);
    auto want = ReferenceAttention(q, k, v, c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window);
    ExpectClose(out, want, kTol, "CausalAttention");
  }
}

// Llama 4's chunked attention: chunks shorter than, equal to and longer than the 128-row query blocks, alone and
// with a window.
TEST_P(CpuOpsTest, ChunkedAttentionMatchesReference) {
  struct Case {
    int64_t seqs, T, heads, kv_heads, hd, window, chunk;
  };
  const Case cases[] = {{2, 131, 4, 2, 16, 0, 7},   {1, 300, 2, 1, 8, 0, 128}, {1, 300, 2, 2, 8, 0, 200},
                        {2, 77, 3, 1, 8, 0, 1},     {1, 261, 2, 1, 8, 50, 96}, {1, 40, 2, 1, 8, 0, 8192}};
  for (const Case& c : cases) {
    auto q = RandomVector(c.seqs * c.T * c.heads * c.hd, 17, -2, 2);
    auto k = RandomVector(c.seqs * c.T * c.kv_heads * c.hd, 18, -2, 2);
    auto v = RandomVector(c.seqs * c.T * c.kv_heads * c.hd, 19);
    std::vector<float> out(q.size(), -7.0f);
    CausalAttention(q.data(), k.data(), v.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window, out.data(),
                    &ctx_, 0.0f, 0.0f, c.chunk);
    auto want = ReferenceAttention(q, k, v, c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window, c.chunk);
    ExpectClose(out, want, kTol, "CausalAttention chunked");
    // The first token of a chunk sees only itself: its output is its own value row.
    if (c.chunk < c.T && c.window == 0) {
      for (int64_t d = 0; d < c.hd; ++d)
        EXPECT_NEAR(out[(c.chunk * c.heads) * c.hd + d], v[(c.chunk * c.kv_heads) * c.hd + d], 1e-6);
    }
  }
}

TEST_P(CpuOpsTest, AttentionIsCausal) {
  // Changing the last token's key and value must not change any earlier output.
  const int64_t T = 140, heads = 4, kv = 2, hd = 8;
  auto q = RandomVector(T * heads * hd, 10), k = RandomVector(T * kv * hd, 11),
       v = RandomVector(T * kv * hd, 12);
  std::vector<float> a(q.size()), b(q.size());
  CausalAttention(q.data(), k.data(), v.data(), 1, T, heads, kv, hd, 0, a.data(), &ctx_);
  for (int64_t c = 0; c < kv * hd; ++c) {
    k[(T - 1) * kv * hd + c] += 5.0f;
    v[(T - 1) * kv * hd + c] -= 3.0f;
  }
  CausalAttention(q.data(), k.data(), v.data(), 1, T, heads, kv, hd, 0, b.data(), &ctx_);
  for (int64_t i = 0; i < (T - 1) * heads * hd; ++i) ASSERT_EQ(a[i], b[i]) << i;
  EXPECT_NE(a.back(), b.back());
}

TEST_P(CpuOpsTest, SwiGluMatchesReferenceIncludingSaturation) {
  const int64_t n = 8193;
  auto g = RandomVector(n, 13, -12, 12), u = RandomVector(n, 14, -3, 3);
  g[0] = -100.0f;  // exp(100) overflows nothing: silu -> -0
  g[1] = 100.0f;   // silu -> x
  g[2] = 0.0f;
  g[3] = -88.0f;
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
  std::vector<float> out(n);
  SwiGlu(g.data(), u.data(), n, out.data(), &ctx_);
  ExpectClose(out, want, kTol, "SwiGlu");
  for (float f : out) EXPECT_TRUE(std::isfinite(f));
}

TEST_P(CpuOpsTest, LogSoftmaxAndTokenNllMatchReference) {
  const int64_t rows = 5, vocab = 1025;
  auto x = RandomVector(rows * vocab, 15, -20, 20);
  for (int64_t i = 0; i < vocab; ++i) x[vocab + i] += 1000.0f;  // large offsets must not overflow
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, double(x[r * vocab + i]));
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(x[r * vocab + i] - mx);
    for (int64_t i = 0; i < vocab; ++i) want[r * vocab + i] = x[r * vocab + i] - mx - std::log(sum);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t : {int64_t{0}, vocab / 2, vocab - 1})
      EXPECT_NEAR(TokenNll(x.data() + r * vocab, vocab, t), -want[r * vocab + t],
                  1e-7 * (1 + std::fabs(want[r * vocab + t])));  // fp32 shift, fp64 sum
  LogSoftmaxRows(x.data(), rows, vocab, &ctx_);
  ExpectClose(x, want, 1e-6, "LogSoftmaxRows");
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuOpsTest, ::testing::Values(1, 3),
                         [](const auto& info) { return "threads" + std::to_string(info.param); });

TEST(FastExpTest, RelativeErrorAndRange) {
  double worst = 0;
  float at = 0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.3f + (88.3f + 87.3f) * static_cast<float>(i) / 2000000.0f;
    const double want = std::exp(static_cast<double>(x));
    const double err = std::fabs(FastExp(x) - want) / want;
    if (err > worst) {
      worst = err;
      at = x;
    }
  }
  EXPECT_LT(worst, 3e-7) << "at x = " << at;
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_GT(FastExp(-1000.0f), 0.0f);  // saturates to a tiny normal number
  EXPECT_LT(FastExp(-1000.0f), 2e-38f);
  EXPECT_TRUE(std::isfinite(FastExp(1000.0f)));
  EXPECT_TRUE(std::isfinite(FastExp(-std::numeric_limits<float>::infinity())));
}

TEST(CpuContextTest, ParallelForCoversEveryIndexOnce) {
  CpuContext ctx(4);
  for (int64_t n : {0, 1, 7, 1000}) {
    for (int64_t grain : {1, 3, 64}) {
      std::vector<int> hits(n, 0);
      ctx.ParallelFor(n, grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << n << " " << grain << " " << i;
    }
  }
}

}  // namespace
}  // namespace llmc
