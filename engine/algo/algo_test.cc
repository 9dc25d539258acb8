// Tests of the calibrated solvers: statistics accumulation, GPTQ (against RTN and against a plain unblocked
// fp64 reference), SparseGPT and Wanda.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/algo/gptq.h"
#include "engine/algo/hessian.h"
#include "engine/algo/mask_structure.h"
#include "engine/algo/sparsegpt.h"
#include "engine/algo/wanda.h"
#include "engine/format/quant_scheme.h"
#include "engine/quant/group_quantizer.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/dtype.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

constexpr char kModule[] = "model.layers.2.mlp.down_proj";

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// N(0, 0.02) weights rounded to bf16 (the model's values), with a few larger outliers.
std::vector<float> RandomWeight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> w(rows * cols);
  for (auto& v : w) {
    v = normal(rng);
    if (uni(rng) < 0.01f) v *= 8.0f;
    v = RoundBF16(v);
  }
  return w;
}

// Correlated activations x = z M [tokens, k]: M mixes channels (off-diagonal N(0, 1/k)) and scales them
// (diagonal in [0.2, 2], a few outlier channels x10), as LLM activations are.
std::vector<float> CorrelatedInputs(int64_t tokens, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> m(k * k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) m[i * k + j] = normal(rng) / std::sqrt(static_cast<float>(k));
  for (int64_t j = 0; j < k; ++j) m[j * k + j] += (0.2f + 1.8f * uni(rng)) * (uni(rng) < 0.03f ? 10.0f : 1.0f);
  std::vector<float> z(tokens * k), x(tokens * k, 0.0f);
  for (auto& v : z) v = normal(rng);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < k; ++i) {
      const float zi = z[t * k + i];
      for (int64_t j = 0; j < k; ++j) x[t * k + j] += zi * m[i * k + j];
    }
  return x;
}

// X^T X in fp64, the exact reference.
std::vector<double> ExactXtX(const std::vector<float>& x, int64_t tokens, int64_t k) {
  std::vector<double> s(k * k, 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < k; ++i) {
      const double xi = x[t * k + i];
      for (int64_t j = 0; j < k; ++j) s[i * k + j] += xi * x[t * k + j];
    }
  return s;
}

// ||X W^T - X Q^T||_F^2 = sum_r (w_r - q_r)^T (X^T X) (w_r - q_r).
double OutputError(const std::vector<double>& xtx, const std::vector<float>& w, const std::vector<float>& q,
                   int64_t rows, int64_t cols) {
  double total = 0;
  std::vector<double> d(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[c] = static_cast<double>(w[r * cols + c]) - q[r * cols + c];
    for (int64_t i = 0; i < cols; ++i) {
      if (d[i] == 0) continue;
      double acc = 0;
      for (int64_t j = 0; j < cols; ++j) acc += xtx[i * cols + j] * d[j];
      total += d[i] * acc;
    }
  }
  return total;
}

struct Problem {
  int64_t rows, cols, tokens, samples;
  std::vector<float> w, x, h;
  std::vector<double> xtx;
};

Problem MakeProblem(int64_t rows, int64_t cols, int64_t tokens, uint32_t seed, int64_t samples = 8) {
  Problem p{rows, cols, tokens, samples, RandomWeight(rows, cols, seed), CorrelatedInputs(tokens, cols, seed + 1), {},
            {}};
  HessianAccumulator acc(cols);
  const int64_t per = tokens / samples;
  for (int64_t s = 0; s < samples; ++s) EXPECT_TRUE(acc.Add(p.x.data() + s * per * cols, per).ok());
  p.h = acc.Hessian();
  p.xtx = ExactXtX(p.x, tokens, cols);
  return p;
}

struct Scheme {
  QuantArgs args;
  std::string format;
};

Scheme Preset(const char* name) {
  auto s = PresetScheme(name);
  EXPECT_TRUE(s.ok()) << s.status();
  auto f = InferFormat(*s);
  EXPECT_TRUE(f.ok()) << f.status();
  return {*s->weights, *f};
}

Scheme Int4Channel() {
  auto a = QuantArgs::FromJson(
      nlohmann::json{{"num_bits", 4}, {"type", "int"}, {"symmetric", true}, {"strategy", "channel"}}, "test", true);
  EXPECT_TRUE(a.ok()) << a.status();
  QuantScheme s;
  s.weights = *a;
  auto f = InferFormat(s);
  EXPECT_TRUE(f.ok()) << f.status();
  return {*a, *f};
}

GroupQuantizer MakeQuantizer(const Scheme& s, const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::optional<float> gs;
  if (s.format == "nvfp4-pack-quantized") {
    float amax = 0;
    for (float v : w) amax = std::max(amax, std::fabs(v));
    gs = NvFp4GlobalScale(amax, DType::kBF16);
  }
  auto q = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, s.args, s.format, gs);
  EXPECT_TRUE(q.ok()) << q.status();
  return *std::move(q);
}

// Round-to-nearest with the same quantizer rules: every group observed on `w`, every element fake-quantized.
std::vector<float> Rtn(GroupQuantizer q, const std::vector<float>& w, int64_t rows, int64_t cols) {
  for (int64_t g = 0; g < q.num_groups(); ++g)
    EXPECT_TRUE(q.Observe(w.data(), cols, g * q.group_cols(), q.group_cols(), g).ok());
  std::vector<float> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = q.FakeQuant(w[r * cols + c], r, c / q.group_cols());
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

TEST(HessianAccumulatorTest, MatchesTheLibraryRunningRuleAndTheExactSum) {
  const int64_t k = 48, tokens = 300;
  std::vector<float> x = CorrelatedInputs(tokens, k, 3);
  HessianAccumulator acc(k);
  // Batches of 2, 1 and 3 samples of 50 tokens each (llm-compressor counts the leading dimension).
  const int64_t sizes[] = {2, 1, 3};
  std::vector<double> running(k * k, 0.0);  // H <- H n/(n+b) + 2/(n+b) X^T X, in fp64
  int64_t n = 0, t0 = 0;
  for (int64_t b : sizes) {
    ASSERT_TRUE(acc.Add(x.data() + t0 * k, 50 * b, b).ok());
    std::vector<double> part = ExactXtX(std::vector<float>(x.begin() + t0 * k, x.begin() + (t0 + 50 * b) * k),
                                        50 * b, k);
    for (int64_t i = 0; i < k * k; ++i) running[i] = running[i] * n / (n + b) + 2.0 / (n + b) * part[i];
    n += b;
    t0 += 50 * b;
  }
  EXPECT_EQ(acc.num_samples(), 6);
  EXPECT_EQ(acc.num_tokens(), 300);
  std::vector<float> h = acc.Hessian();
  std::vector<double> exact = ExactXtX(x, tokens, k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double want = 2.0 / 6 * exact[i * k + j];
      EXPECT_NEAR(h[i * k + j], want, 1e-4 * (1 + std::fabs(want))) << i << "," << j;
      EXPECT_NEAR(running[i * k + j], want, 1e-9 * (1 + std::fabs(want)));
      EXPECT_EQ(h[i * k + j], h[j * k + i]);  // symmetric
    }
}

TEST(HessianAccumulatorTest, MergeEqualsOneShotAndChunkingDoesNotMatter) {
  const int64_t k = 64, tokens = 512;
  std::vector<float> x = CorrelatedInputs(tokens, k, 5);
  HessianAccumulator one(k);
  ASSERT_TRUE(one.Add(x.data(), tokens, 4).ok());
  // Two "ranks", each adding its part in uneven chunks, then merged.
  HessianAccumulator a(k), b(k);
  ASSERT_TRUE(a.Add(x.data(), 7, 1).ok());
  ASSERT_TRUE(a.Add(x.data() + 7 * k, 249, 1).ok());
  ASSERT_TRUE(b.Add(x.data() + 256 * k, 1, 1).ok());
  for (int64_t t = 257; t < tokens; t += 51) ASSERT_TRUE(b.Add(x.data() + t * k, std::min<int64_t>(51, tokens - t), 0).ok());
  ASSERT_TRUE(b.Add(nullptr, 0, 1).ok());
  ASSERT_TRUE(a.Merge(b).ok());
  EXPECT_EQ(a.num_samples(), one.num_samples());
  EXPECT_EQ(a.num_tokens(), one.num_tokens());
  std::vector<float> h1 = one.Hessian(), h2 = a.Hessian();
  std::vector<double> exact = ExactXtX(x, tokens, k);
  for (int64_t i = 0; i < k * k; ++i) {
    const double want = 0.5 * exact[i];
    EXPECT_NEAR(h1[i], want, 2e-5 * (1 + std::fabs(want)));
    EXPECT_NEAR(h2[i], h1[i], 2e-5 * (1 + std::fabs(want)));
  }
  // TakeHessian returns the same and leaves the accumulator empty.
  std::vector<float> h3 = a.TakeHessian();
  EXPECT_EQ(h3, h2);
  EXPECT_EQ(a.num_samples(), 0);
  EXPECT_THAT(a.Hessian(), ::testing::Each(0.0f));
  HessianAccumulator other(k + 1);
  EXPECT_FALSE(a.Merge(other).ok());
  EXPECT_FALSE(a.Add(x.data(), -1).ok());
}

TEST(RowNormAccumulatorTest, SumsSquaresPerColumnAndMerges) {
  const int64_t k = 33, tokens = 100;
  std::vector<float> x = CorrelatedInputs(tokens, k, 9);
  RowNormAccumulator one(k), a(k), b(k);
  ASSERT_TRUE(one.Add(x.data(), tokens, 2).ok());
  ASSERT_TRUE(a.Add(x.data(), 40).ok());
  ASSERT_TRUE(b.Add(x.data() + 40 * k, 60).ok());
  ASSERT_TRUE(a.Merge(b).ok());
  std::vector<float> scalars = one.RowScalars();
  for (int64_t c = 0; c < k; ++c) {
    double want = 0;
    for (int64_t t = 0; t < tokens; ++t) want += static_cast<double>(x[t * k + c]) * x[t * k + c];
    EXPECT_NEAR(one.SumSquares()[c], want, 1e-9 * want);
    EXPECT_NEAR(a.SumSquares()[c], want, 1e-9 * want);
    EXPECT_FLOAT_EQ(scalars[c], static_cast<float>(want / 2));
  }
  EXPECT_EQ(a.num_samples(), 2);
  EXPECT_EQ(a.num_tokens(), tokens);
}

// ---------------------------------------------------------------------------------------------------------------
// GPTQ

TEST(ActOrderTest, ParsesAndResolvesAsTheLibrary) {
  EXPECT_EQ(*ParseActOrder("static"), ActOrder::kWeight);
  EXPECT_EQ(*ParseActOrder("weight"), ActOrder::kWeight);
  EXPECT_EQ(*ParseActOrder("dynamic"), ActOrder::kGroup);
  EXPECT_EQ(*ParseActOrder("GROUP"), ActOrder::kGroup);
  EXPECT_EQ(*ParseActOrder("none"), ActOrder::kNone);
  EXPECT_EQ(*ParseActOrder(""), ActOrder::kNone);
  EXPECT_THAT(Msg(ParseActOrder("random").status()), HasSubstr("random"));

  QuantArgs group = Preset("W4A16").args;
  auto r = ResolveActOrder(kModule, "static", group);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->order, ActOrder::kWeight);
  EXPECT_EQ(r->config_value, std::optional<std::string>("static"));
  r = ResolveActOrder(kModule, "none", group);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->order, ActOrder::kNone);
  EXPECT_FALSE(r->config_value.has_value());
  group.actorder = "group";
  r = ResolveActOrder(kModule, "static", group);  // the default yields to the scheme
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->order, ActOrder::kGroup);
  EXPECT_EQ(r->config_value, std::optional<std::string>("group"));
  r = ResolveActOrder(kModule, "dynamic", group);  // aliases agree
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->order, ActOrder::kGroup);
  EXPECT_THAT(Msg(ResolveActOrder(kModule, "weight", group).status()), HasSubstr(kModule));
  // Channel: the modifier does not touch it and the solver does not permute.
  QuantArgs channel = Preset("W8A8").args;
  r = ResolveActOrder(kModule, "group", channel);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->order, ActOrder::kNone);
  EXPECT_FALSE(r->config_value.has_value());
}

struct GptqCase {
  const char* name;
  Scheme (*scheme)();
  const char* actorder;
  double max_ratio;  // GPTQ output error / RTN output error must stay below this
};

void PrintTo(const GptqCase& c, std::ostream* os) { *os << c.name; }

class GptqBeatsRtn : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqBeatsRtn, LowerOutputError) {
  const GptqCase& tc = GetParam();
  Problem p = MakeProblem(64, 512, 2048, 11);
  Scheme s = tc.scheme();
  GroupQuantizer q = MakeQuantizer(s, p.w, p.rows, p.cols);
  std::vector<float> rtn = Rtn(q, p.w, p.rows, p.cols);
  GptqOptions opt;
  opt.actorder = tc.actorder;
  opt.weight_args = &s.args;
  auto res = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q, opt);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_FALSE(res->fell_back_to_rtn);
  EXPECT_GT(res->loss, 0);
  // Every value is on the quantization grid: the encoded tensors decode to exactly the solver's values (the
  // g_idx case is checked by ActOrderGroupSetsGIdxThatTheEncoderStores).
  auto enc = EncodeQuantizedWeight(kModule, res->weight.data(), DType::kBF16, s.args, s.format, res->params);
  ASSERT_TRUE(enc.ok()) << enc.status();
  if (res->params.g_idx.empty()) {
    auto dec = DequantizeWeight(p.rows, p.cols, DType::kBF16, s.args, s.format, *enc);
    ASSERT_TRUE(dec.ok()) << dec.status();
    for (size_t i = 0; i < dec->size(); ++i) ASSERT_EQ(RoundBF16((*dec)[i]), res->weight[i]) << i;
  }
  const double e_rtn = OutputError(p.xtx, p.w, rtn, p.rows, p.cols);
  const double e_gptq = OutputError(p.xtx, p.w, res->weight, p.rows, p.cols);
  RecordProperty("rtn_error", std::to_string(e_rtn));
  RecordProperty("gptq_error", std::to_string(e_gptq));
  EXPECT_LT(e_gptq, tc.max_ratio * e_rtn) << "rtn " << e_rtn << " gptq " << e_gptq;
  std::printf("%s: output error GPTQ / RTN = %.3f\n", tc.name, e_gptq / e_rtn);
}

INSTANTIATE_TEST_SUITE_P(
    Schemes, GptqBeatsRtn,
    ::testing::Values(GptqCase{"W4A16_static", [] { return Preset("W4A16"); }, "static", 0.8},
                      GptqCase{"W4A16_none", [] { return Preset("W4A16"); }, "none", 0.8},
                      GptqCase{"W4A16_group", [] { return Preset("W4A16"); }, "group", 0.8},
                      GptqCase{"W4A16_ASYM", [] { return Preset("W4A16_ASYM"); }, "static", 0.8},
                      GptqCase{"int4_channel", Int4Channel, "static", 0.8},
                      GptqCase{"W8A8_channel", [] { return Preset("W8A8"); }, "static", 0.9},
                      GptqCase{"FP8_DYNAMIC", [] { return Preset("FP8_DYNAMIC"); }, "static", 0.95},
                      GptqCase{"FP8_tensor", [] { return Preset("FP8"); }, "static", 0.95},
                      GptqCase{"MXFP8A16", [] { return Preset("MXFP8A16"); }, "static", 0.95},
                      GptqCase{"NVFP4A16", [] { return Preset("NVFP4A16"); }, "static", 0.9},
                      GptqCase{"MXFP4A16", [] { return Preset("MXFP4A16"); }, "static", 0.9}),
    [](const ::testing::TestParamInfo<GptqCase>& info) { return std::string(info.param.name); });

// A textbook unblocked GPTQ in fp64: H dampened, U = chol(H^-1)^T, one column at a time with a full update.
// With `perm` (activation order "static"), the columns are solved in that order with their original groups.
std::vector<float> ReferenceGptq(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& h,
                                 double damp_frac, const GroupQuantizer& q, double* loss,
                                 const std::vector<int64_t>* perm = nullptr) {
  const int64_t n = cols;
  auto src = [&](int64_t j) { return perm ? (*perm)[j] : j; };
  std::vector<double> a(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) a[i * n + j] = h[src(i) * n + src(j)];
  std::vector<double> wd(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) wd[r * n + j] = w[r * n + src(j)];
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (a[i * n + i] == 0) {
      a[i * n + i] = 1;
      for (int64_t r = 0; r < rows; ++r) wd[r * n + i] = 0;
    }
    mean += a[i * n + i] / n;
  }
  for (int64_t i = 0; i < n; ++i) a[i * n + i] += damp_frac * mean;
  auto cholesky_lower = [n](std::vector<double>& m) {  // in place, lower triangle; upper zeroed
    for (int64_t j = 0; j < n; ++j) {
      double d = m[j * n + j];
      for (int64_t k = 0; k < j; ++k) d -= m[j * n + k] * m[j * n + k];
      d = std::sqrt(d);
      m[j * n + j] = d;
      for (int64_t i = j + 1; i < n; ++i) {
        double s = m[i * n + j];
        for (int64_t k = 0; k < j; ++k) s -= m[i * n + k] * m[j * n + k];
        m[i * n + j] = s / d;
      }
      for (int64_t i = 0; i < j; ++i) m[i * n + j] = 0;
    }
  };
  cholesky_lower(a);
  // H^-1 = L^-T L^-1: invert L column by column (forward substitution).
  std::vector<double> linv(n * n, 0.0);
  for (int64_t c = 0; c < n; ++c) {
    for (int64_t i = 0; i < n; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (int64_t k = 0; k < i; ++k) s -= a[i * n + k] * linv[k * n + c];
      linv[i * n + c] = s / a[i * n + i];
    }
  }
  std::vector<double> hinv(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = std::max(i, j); k < n; ++k) s += linv[k * n + i] * linv[k * n + j];
      hinv[i * n + j] = s;
    }
  cholesky_lower(hinv);  // hinv = L2, U = L2^T
  auto u = [&](int64_t i, int64_t j) { return hinv[j * n + i]; };
  std::vector<float> out(rows * cols);
  *loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = u(i, i);
    for (int64_t r = 0; r < rows; ++r) {
      const double x = wd[r * n + i];
      const double qv = q.FakeQuant(static_cast<float>(x), r, src(i) / q.group_cols());
      out[r * n + src(i)] = static_cast<float>(qv);
      const double e = (x - qv) / d;
      *loss += e * e / 2;
      for (int64_t j = i + 1; j < n; ++j) wd[r * n + j] -= e * u(i, j);
    }
  }
  return out;
}

TEST(GptqTest, BlockedEqualsUnblockedReference) {
  // 384 columns in blocks of 100 (the last block is partial and blocks straddle the 128-column groups), 37 rows.
  Problem p = MakeProblem(37, 384, 1536, 21);
  std::vector<int64_t> perm(p.cols);  // descending H_ii
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int64_t a, int64_t b) { return p.h[a * p.cols + a] > p.h[b * p.cols + b]; });
  for (const char* name : {"W4A16", "W4A16_ASYM", "W4A16:static"}) {
    const bool ordered = std::string(name) == "W4A16:static";
    Scheme s = Preset(ordered ? "W4A16" : name);
    GroupQuantizer q = MakeQuantizer(s, p.w, p.rows, p.cols);
    GptqOptions opt;
    opt.block_size = 100;
    opt.actorder = ordered ? "static" : "none";
    auto res = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q, opt);
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(res->actorder, ordered ? ActOrder::kWeight : ActOrder::kNone);
    double ref_loss = 0;
    std::vector<float> ref = ReferenceGptq(p.w, p.rows, p.cols, p.h, 0.01, q, &ref_loss, ordered ? &perm : nullptr);
    int64_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) differ += ref[i] != res->weight[i];
    // fp32 blocked vs fp64 unblocked: a code may flip where w / scale is within rounding of a half step; the flip
    // then changes the rest of that row slightly. Nearly all codes agree (all of them, in practice).
    EXPECT_LE(differ, static_cast<int64_t>(ref.size() / 1000)) << name << ": " << differ << " of " << ref.size();
    std::printf("%s: blocked fp32 vs unblocked fp64 reference: %lld of %zu values differ; loss %.6g vs %.6g\n", name,
                static_cast<long long>(differ), ref.size(), res->loss, ref_loss);
    EXPECT_NEAR(res->loss, ref_loss, 1e-4 * ref_loss) << name;
    // The same with fp32 factorization (the library's precision).
    GroupQuantizer q32 = MakeQuantizer(s, p.w, p.rows, p.cols);
    opt.double_precision_inverse = false;
    auto res32 = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q32, opt);
    ASSERT_TRUE(res32.ok());
    differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) differ += ref[i] != res32->weight[i];
    EXPECT_LE(differ, static_cast<int64_t>(ref.size() / 100)) << name << " fp32: " << differ;
    std::printf("%s: fp32 factorization: %lld values differ from the reference\n", name, static_cast<long long>(differ));
  }
}

TEST(GptqTest, IdentityHessianIsExactlyRtn) {
  const int64_t rows = 24, cols = 256;
  std::vector<float> w = RandomWeight(rows, cols, 31);
  std::vector<float> h(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 2.0f;
  for (const char* name : {"W4A16", "W4A16_ASYM", "W8A8", "NVFP4A16"}) {
    Scheme s = Preset(name);
    GroupQuantizer q = MakeQuantizer(s, w, rows, cols);
    std::vector<float> rtn = Rtn(q, w, rows, cols);
    auto res = GptqQuantize(kModule, w.data(), rows, cols, h.data(), 1, &q);  // actorder static: all ties
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(res->weight, rtn) << name;
    // loss = sum (w - q)^2 / U_ii^2 / 2 with U_ii^2 = 1 / (2 * 1.01).
    double want = 0;
    for (int64_t i = 0; i < rows * cols; ++i) want += std::pow(static_cast<double>(w[i]) - rtn[i], 2) * 2.02 / 2;
    EXPECT_NEAR(res->loss, want, 1e-4 * want) << name;
  }
}

TEST(GptqTest, ThreadsDoNotChangeTheResult) {
  Problem p = MakeProblem(200, 256, 1024, 41);
  Scheme s = Preset("W4A16");
  GroupQuantizer q1 = MakeQuantizer(s, p.w, p.rows, p.cols), q4 = q1;
  GptqOptions opt;
  opt.num_threads = 1;
  auto a = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q1, opt);
  opt.num_threads = 3;
  auto b = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q4, opt);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->weight, b->weight);
  EXPECT_EQ(a->loss, b->loss);
}

// GptqOptions::result_storage: a reused buffer full of stale values (NaN) gives the same result as a fresh one,
// with and without a column permutation, and its memory becomes the result's.
TEST(GptqTest, ResultStorageIsReusedAndDoesNotChangeTheResult) {
  Problem p = MakeProblem(64, 256, 1024, 43);
  Scheme s = Preset("W4A16");
  for (const char* order : {"none", "static", "group"}) {
    GroupQuantizer q1 = MakeQuantizer(s, p.w, p.rows, p.cols), q2 = q1;
    GptqOptions opt;
    opt.actorder = order;
    opt.weight_args = &s.args;
    auto fresh = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q1, opt);
    std::vector<float> storage(static_cast<size_t>(p.rows * p.cols), std::numeric_limits<float>::quiet_NaN());
    const float* buffer = storage.data();
    opt.result_storage = &storage;
    auto reused = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q2, opt);
    ASSERT_TRUE(fresh.ok() && reused.ok()) << order;
    EXPECT_EQ(reused->weight, fresh->weight) << order;
    EXPECT_EQ(reused->loss, fresh->loss) << order;
    EXPECT_EQ(reused->weight.data(), buffer) << order << ": the storage's memory was not reused";
    EXPECT_TRUE(storage.empty()) << order;
  }
}

// Unpacks pack-quantized int4 symmetric tensors and dequantizes with weight_g_idx, as a reader does.
std::vector<float> DecodeWithGIdx(const std::vector<std::vector<uint8_t>>& t, int64_t rows, int64_t cols,
                                  int64_t groups, std::vector<int32_t>* g_idx) {
  std::vector<int8_t> codes = UnpackInt32(reinterpret_cast<const int32_t*>(t[0].data()), rows, cols, 4, 1);
  g_idx->resize(cols);
  std::memcpy(g_idx->data(), t.back().data(), cols * 4);
  std::vector<float> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint16_t sbits;
      std::memcpy(&sbits, t[1].data() + 2 * (r * groups + (*g_idx)[c]), 2);
      out[r * cols + c] = RoundBF16(codes[r * cols + c] * BF16ToFloat(sbits));
    }
  return out;
}

TEST(GptqTest, ActOrderGroupSetsGIdxThatTheEncoderStores) {
  Problem p = MakeProblem(32, 512, 1024, 51);
  Scheme s = Preset("W4A16");
  GroupQuantizer q = MakeQuantizer(s, p.w, p.rows, p.cols);
  GptqOptions opt;
  opt.actorder = "group";
  auto res = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q, opt);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->actorder, ActOrder::kGroup);
  const std::vector<int32_t>& g_idx = res->params.g_idx;
  ASSERT_EQ(static_cast<int64_t>(g_idx.size()), p.cols);
  EXPECT_EQ(q.params().g_idx, g_idx);
  // Group g holds the 128 columns of largest H_ii ranks [128g, 128g + 128): a permutation, not the identity.
  std::vector<int> per_group(4, 0);
  int64_t moved = 0;
  for (int64_t c = 0; c < p.cols; ++c) {
    ASSERT_GE(g_idx[c], 0);
    ASSERT_LT(g_idx[c], 4);
    ++per_group[g_idx[c]];
    moved += g_idx[c] != c / 128;
  }
  EXPECT_THAT(per_group, ::testing::Each(128));
  EXPECT_GT(moved, 0);
  for (int64_t c = 0; c < p.cols; ++c)
    for (int64_t d = 0; d < p.cols; ++d)
      if (g_idx[c] < g_idx[d]) {
        ASSERT_GE(p.h[c * p.cols + c], p.h[d * p.cols + d]);
      }
  auto enc = EncodeQuantizedWeight(kModule, res->weight.data(), DType::kBF16, s.args, s.format, res->params);
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto plan = PlanQuantizedWeight(kModule, p.rows, p.cols, DType::kBF16, s.args, s.format);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(enc->size(), plan->size() + 1);  // + weight_g_idx
  std::vector<int32_t> stored;
  std::vector<float> decoded = DecodeWithGIdx(*enc, p.rows, p.cols, 4, &stored);
  EXPECT_EQ(stored, g_idx);
  EXPECT_EQ(decoded, res->weight);
  // And it helps: no worse than static ordering on this problem by much, clearly better than RTN.
  std::vector<float> rtn = Rtn(MakeQuantizer(s, p.w, p.rows, p.cols), p.w, p.rows, p.cols);
  EXPECT_LT(OutputError(p.xtx, p.w, res->weight, p.rows, p.cols), 0.8 * OutputError(p.xtx, p.w, rtn, p.rows, p.cols));
}

TEST(GptqTest, StaticOrderStoresNoGIdxAndRoundTripsThroughTheEncoder) {
  Problem p = MakeProblem(16, 256, 512, 61);
  for (const char* name : {"W4A16", "W4A16_ASYM", "W8A8", "FP8_DYNAMIC", "MXFP4A16", "NVFP4A16"}) {
    Scheme s = Preset(name);
    GroupQuantizer q = MakeQuantizer(s, p.w, p.rows, p.cols);
    auto res = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q);
    ASSERT_TRUE(res.ok()) << name << ": " << res.status();
    EXPECT_TRUE(res->params.g_idx.empty()) << name;
    auto enc = EncodeQuantizedWeight(kModule, res->weight.data(), DType::kBF16, s.args, s.format, res->params);
    ASSERT_TRUE(enc.ok()) << name << ": " << enc.status();
    auto dec = DequantizeWeight(p.rows, p.cols, DType::kBF16, s.args, s.format, *enc);
    ASSERT_TRUE(dec.ok()) << name << ": " << dec.status();
    int64_t differ = 0;
    for (size_t i = 0; i < dec->size(); ++i) differ += RoundBF16((*dec)[i]) != res->weight[i];
    EXPECT_EQ(differ, 0) << name;
  }
}

TEST(GptqTest, DeadColumnsAreZeroed) {
  Problem p = MakeProblem(16, 256, 512, 71);
  for (int64_t dead : {5, 130}) {
    for (int64_t i = 0; i < p.cols; ++i) p.h[dead * p.cols + i] = p.h[i * p.cols + dead] = 0.0f;
  }
  Scheme s = Preset("W4A16");
  GroupQuantizer q = MakeQuantizer(s, p.w, p.rows, p.cols);
  auto res = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->dead_columns, 2);
  for (int64_t r = 0; r < p.rows; ++r) {
    EXPECT_EQ(res->weight[r * p.cols + 5], 0.0f);
    EXPECT_EQ(res->weight[r * p.cols + 130], 0.0f);
  }
}

TEST(GptqTest, BadHessiansAndInputs) {
  const int64_t rows = 8, cols = 128;
  std::vector<float> w = RandomWeight(rows, cols, 81);
  Scheme s = Preset("W4A16");
  std::vector<float> h(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f;

  // NaN anywhere in H: an error naming the module.
  std::vector<float> bad = h;
  bad[3 * cols + 7] = bad[7 * cols + 3] = std::numeric_limits<float>::quiet_NaN();
  GroupQuantizer q = MakeQuantizer(s, w, rows, cols);
  auto res = GptqQuantize(kModule, w.data(), rows, cols, bad.data(), 1, &q);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(res.status()), HasSubstr(kModule));
  bad = h;
  bad[9 * cols + 9] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(Msg(GptqQuantize(kModule, w.data(), rows, cols, bad.data(), 1, &q).status()), HasSubstr("NaN or Inf"));

  // NaN in the weight.
  std::vector<float> wn = w;
  wn[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(Msg(GptqQuantize(kModule, wn.data(), rows, cols, h.data(), 1, &q).status()), HasSubstr(kModule));

  // No samples, wrong shapes, bad options.
  EXPECT_EQ(GptqQuantize(kModule, w.data(), rows, cols, h.data(), 0, &q).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(GptqQuantize(kModule, w.data(), rows, cols + 1, h.data(), 1, &q).ok());
  GptqOptions opt;
  opt.block_size = 0;
  EXPECT_FALSE(GptqQuantize(kModule, w.data(), rows, cols, h.data(), 1, &q, opt).ok());
  opt = {};
  opt.actorder = "sideways";
  EXPECT_FALSE(GptqQuantize(kModule, w.data(), rows, cols, h.data(), 1, &q, opt).ok());

  // Negative definite H: not factorable even after dampening -> RTN fallback, flagged with the module's name.
  std::vector<float> neg(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) neg[i * cols + i] = -1.0f;
  GroupQuantizer qn = MakeQuantizer(s, w, rows, cols);
  res = GptqQuantize(kModule, w.data(), rows, cols, neg.data(), 1, &qn);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_TRUE(res->fell_back_to_rtn);
  EXPECT_THAT(res->warning, HasSubstr(kModule));
  EXPECT_THAT(res->warning, HasSubstr("round-to-nearest"));
  EXPECT_EQ(res->weight, Rtn(MakeQuantizer(s, w, rows, cols), w, rows, cols));
  // Singular (rank-deficient) H with zero dampening: also a fallback, not an error.
  std::vector<float> x = CorrelatedInputs(4, cols, 3);  // 4 tokens: rank 4
  HessianAccumulator acc(cols);
  ASSERT_TRUE(acc.Add(x.data(), 4).ok());
  std::vector<float> sing = acc.Hessian();
  opt = {};
  opt.dampening_frac = 0.0;
  GroupQuantizer qs = MakeQuantizer(s, w, rows, cols);
  res = GptqQuantize(kModule, w.data(), rows, cols, sing.data(), 1, &qs, opt);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_TRUE(res->fell_back_to_rtn);
}

// ---------------------------------------------------------------------------------------------------------------
// SparseGPT and Wanda

// Magnitude pruning baseline: per row, the smallest |w| (unstructured) or the N smallest of every M.
std::vector<float> MagnitudePrune(std::vector<float> w, int64_t rows, int64_t cols, int n, int m, double sparsity) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.data() + r * cols;
    if (n > 0) {
      for (int64_t c0 = 0; c0 < cols; c0 += m) {
        std::vector<int64_t> idx(m);
        std::iota(idx.begin(), idx.end(), c0);
        std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return std::fabs(row[a]) < std::fabs(row[b]); });
        for (int j = 0; j < n; ++j) row[idx[j]] = 0;
      }
    } else {
      std::vector<int64_t> idx(cols);
      std::iota(idx.begin(), idx.end(), 0);
      std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return std::fabs(row[a]) < std::fabs(row[b]); });
      for (int64_t j = 0; j < static_cast<int64_t>(cols * sparsity); ++j) row[idx[j]] = 0;
    }
  }
  return w;
}

TEST(MaskStructureTest, Parses) {
  EXPECT_EQ(ParseMaskStructure("x", "2:4")->n, 2);
  EXPECT_EQ(ParseMaskStructure("x", "2:4")->m, 4);
  EXPECT_FALSE(ParseMaskStructure("x", "0:0")->structured());
  EXPECT_FALSE(ParseMaskStructure("x", "4:2").ok());
  EXPECT_FALSE(ParseMaskStructure("x", "2-4").ok());
  EXPECT_THAT(Msg(ParseMaskStructure(kModule, "a:b").status()), HasSubstr(kModule));
}

TEST(SparseGptTest, TwoFourKeepsExactlyTwoOfEveryFourAndBeatsMagnitude) {
  Problem p = MakeProblem(48, 512, 2048, 91);
  SparseGptOptions opt;
  opt.mask_structure = "2:4";
  auto res = SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, p.h.data(), opt);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_FALSE(res->fell_back);
  EXPECT_GT(res->loss, 0);
  EXPECT_EQ(res->pruned, p.rows * p.cols / 2);
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c0 = 0; c0 < p.cols; c0 += 4) {
      int zeros = 0;
      for (int j = 0; j < 4; ++j) zeros += res->weight[r * p.cols + c0 + j] == 0.0f;
      ASSERT_EQ(zeros, 2) << r << "," << c0;
    }
  std::vector<float> mag = MagnitudePrune(p.w, p.rows, p.cols, 2, 4, 0);
  const double e_sgpt = OutputError(p.xtx, p.w, res->weight, p.rows, p.cols);
  const double e_mag = OutputError(p.xtx, p.w, mag, p.rows, p.cols);
  EXPECT_LT(e_sgpt, 0.8 * e_mag) << "sparsegpt " << e_sgpt << " magnitude " << e_mag;
}

TEST(SparseGptTest, UnstructuredPrunesTheRequestedFractionAndBeatsMagnitude) {
  Problem p = MakeProblem(48, 512, 2048, 101);
  for (double sparsity : {0.5, 0.7}) {
    SparseGptOptions opt;
    opt.sparsity = sparsity;
    opt.block_size = 96;  // a partial last block
    auto res = SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, p.h.data(), opt);
    ASSERT_TRUE(res.ok()) << res.status();
    // The library prunes metric <= the k-th smallest per block: k + 1 weights per block (no ties here).
    int64_t want = 0;
    for (int64_t i1 = 0; i1 < p.cols; i1 += 96) {
      const int64_t numel = p.rows * std::min<int64_t>(96, p.cols - i1);
      want += static_cast<int64_t>(numel * sparsity) + 1;
    }
    int64_t zeros = 0;
    for (float v : res->weight) zeros += v == 0.0f;
    EXPECT_EQ(zeros, want) << sparsity;
    EXPECT_EQ(res->pruned, want);
    std::vector<float> mag = MagnitudePrune(p.w, p.rows, p.cols, 0, 0, static_cast<double>(want) / p.w.size());
    const double e_sgpt = OutputError(p.xtx, p.w, res->weight, p.rows, p.cols);
    const double e_mag = OutputError(p.xtx, p.w, mag, p.rows, p.cols);
    EXPECT_LT(e_sgpt, 0.8 * e_mag) << sparsity << ": sparsegpt " << e_sgpt << " magnitude " << e_mag;
  }
}

TEST(SparseGptTest, PreserveMaskAndErrors) {
  Problem p = MakeProblem(16, 256, 512, 111);
  // Start from a 30% magnitude-pruned weight: the preserved zeros stay zero and the target is reached.
  std::vector<float> w0 = MagnitudePrune(p.w, p.rows, p.cols, 0, 0, 0.3);
  SparseGptOptions opt;
  opt.preserve_sparsity_mask = true;
  auto res = SparseGptPrune(kModule, w0.data(), p.rows, p.cols, p.h.data(), opt);
  ASSERT_TRUE(res.ok()) << res.status();
  int64_t zeros = 0;
  for (size_t i = 0; i < w0.size(); ++i) {
    if (w0[i] == 0.0f) {
      ASSERT_EQ(res->weight[i], 0.0f) << i;
    }
    zeros += res->weight[i] == 0.0f;
  }
  EXPECT_GE(zeros, static_cast<int64_t>(0.5 * w0.size()));
  opt.sparsity = 0.2;  // below the existing sparsity
  EXPECT_THAT(Msg(SparseGptPrune(kModule, w0.data(), p.rows, p.cols, p.h.data(), opt).status()), HasSubstr(kModule));
  opt = {};
  opt.sparsity = 1.0;
  EXPECT_FALSE(SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, p.h.data(), opt).ok());
  opt = {};
  opt.mask_structure = "2:4";
  opt.block_size = 65;  // windows of 1 column at the end of each block
  EXPECT_THAT(Msg(SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, p.h.data(), opt).status()),
              HasSubstr("block_size"));
  std::vector<float> bad = p.h;
  bad[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(Msg(SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, bad.data(), {}).status()), HasSubstr(kModule));
  // Not positive definite: pruning goes on without error compensation, flagged.
  std::vector<float> neg(p.cols * p.cols, 0.0f);
  for (int64_t i = 0; i < p.cols; ++i) neg[i * p.cols + i] = -1.0f;
  res = SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, neg.data(), {});
  ASSERT_TRUE(res.ok());
  EXPECT_TRUE(res->fell_back);
  EXPECT_THAT(res->warning, HasSubstr(kModule));
}

TEST(SparseGptThenGptqTest, QuantizationKeepsThePrunedWeightsZero) {
  Problem p = MakeProblem(32, 256, 1024, 121);
  SparseGptOptions sopt;
  sopt.mask_structure = "2:4";
  auto pruned = SparseGptPrune(kModule, p.w.data(), p.rows, p.cols, p.h.data(), sopt);
  ASSERT_TRUE(pruned.ok());
  // Round to the model dtype as the library does after pruning.
  std::vector<float> wp = pruned->weight;
  for (float& v : wp) v = RoundBF16(v);
  for (const char* name : {"W4A16", "W8A8", "FP8_DYNAMIC"}) {
    Scheme s = Preset(name);
    // Automatic rule (>= 5% zeros) and the explicit mask give the same result.
    GroupQuantizer q = MakeQuantizer(s, wp, p.rows, p.cols);
    auto res = GptqQuantize(kModule, wp.data(), p.rows, p.cols, p.h.data(), p.samples, &q);
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_TRUE(res->preserved_zeros);
    for (size_t i = 0; i < wp.size(); ++i)
      if (wp[i] == 0.0f) {
        ASSERT_EQ(res->weight[i], 0.0f) << name << " " << i;
      }
    std::vector<uint8_t> keep = pruned->KeepMask();
    GptqOptions opt;
    opt.keep_mask = &keep;
    GroupQuantizer q2 = MakeQuantizer(s, wp, p.rows, p.cols);
    auto res2 = GptqQuantize(kModule, wp.data(), p.rows, p.cols, p.h.data(), p.samples, &q2, opt);
    ASSERT_TRUE(res2.ok());
    EXPECT_EQ(res2->weight, res->weight) << name;
  }
  // A dense weight does not trigger the rule.
  GroupQuantizer q = MakeQuantizer(Preset("W4A16"), p.w, p.rows, p.cols);
  auto dense = GptqQuantize(kModule, p.w.data(), p.rows, p.cols, p.h.data(), p.samples, &q);
  ASSERT_TRUE(dense.ok());
  EXPECT_FALSE(dense->preserved_zeros);
}

TEST(WandaTest, MaskIsWhatTheMetricSays) {
  const int64_t rows = 24, cols = 256, tokens = 300;
  std::vector<float> w = RandomWeight(rows, cols, 131);
  std::vector<float> x = CorrelatedInputs(tokens, cols, 132);
  RowNormAccumulator acc(cols);
  ASSERT_TRUE(acc.Add(x.data(), tokens, 3).ok());
  std::vector<float> root(cols);
  for (int64_t c = 0; c < cols; ++c) root[c] = std::sqrt(static_cast<float>(acc.SumSquares()[c] / 3));
  auto metric = [&](int64_t r, int64_t c) { return std::fabs(w[r * cols + c]) * root[c]; };

  WandaOptions opt;
  opt.sparsity = 0.6;
  auto res = WandaPrune(kModule, w.data(), rows, cols, acc.SumSquares().data(), acc.num_samples(), opt);
  ASSERT_TRUE(res.ok()) << res.status();
  const int64_t k = static_cast<int64_t>(cols * 0.6);
  EXPECT_EQ(res->pruned, rows * k);
  for (int64_t r = 0; r < rows; ++r) {
    float max_pruned = 0, min_kept = INFINITY;
    int64_t zeros = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = res->weight[r * cols + c];
      if (v == 0.0f) {
        ++zeros;
        max_pruned = std::max(max_pruned, metric(r, c));
      } else {
        ASSERT_EQ(v, w[r * cols + c]);  // kept weights are untouched
        min_kept = std::min(min_kept, metric(r, c));
      }
    }
    EXPECT_EQ(zeros, k);
    EXPECT_LE(max_pruned, min_kept) << r;
  }

  opt.mask_structure = "2:4";
  res = WandaPrune(kModule, w.data(), rows, cols, acc.SumSquares().data(), acc.num_samples(), opt);
  ASSERT_TRUE(res.ok());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += 4) {
      std::vector<int64_t> idx(4);
      std::iota(idx.begin(), idx.end(), c0);
      std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return metric(r, a) < metric(r, b); });
      EXPECT_EQ(res->weight[r * cols + idx[0]], 0.0f);
      EXPECT_EQ(res->weight[r * cols + idx[1]], 0.0f);
      EXPECT_EQ(res->weight[r * cols + idx[2]], w[r * cols + idx[2]]);
      EXPECT_EQ(res->weight[r * cols + idx[3]], w[r * cols + idx[3]]);
    }
  // The activation norms matter: with a huge norm on column 0, it is never pruned.
  std::vector<double> sums(acc.SumSquares());
  sums[0] = 1e12;
  opt.mask_structure = "0:0";
  res = WandaPrune(kModule, w.data(), rows, cols, sums.data(), 3, opt);
  ASSERT_TRUE(res.ok());
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(res->weight[r * cols], w[r * cols]);

  EXPECT_EQ(WandaPrune(kModule, w.data(), rows, cols, sums.data(), 0, opt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  sums[3] = -1;
  EXPECT_THAT(Msg(WandaPrune(kModule, w.data(), rows, cols, sums.data(), 3, opt).status()), HasSubstr(kModule));
}

}  // namespace
}  // namespace llmc
