// CudaGptqQuantize (engine/algo/cuda_gptq.h) against the CPU GptqQuantize (engine/algo/gptq.h). Label `gpu`:
// skips visibly without a device.
//
// Tolerances (kMaxDifferFraction, kLossRelTol): the two differ only in the SGEMM summation order and the last bit
// of the fp64 factor (cuSOLVER vs LAPACK) rounded to fp32, so a code can flip where w / scale lands within
// rounding of a half step (and then moves that row's later values a little). At most 1 value in 1000 may differ;
// the loss agrees to 1e-3 relative. Where no product is rounded differently (identity Hessian, the RTN fallback)
// the results must be equal bit for bit, which checks the device fake quantization on every element.
#include <gtest/gtest.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/algo/cuda_gptq.h"
#include "engine/algo/gptq.h"
#include "engine/algo/hessian.h"
#include "engine/format/quant_scheme.h"
#include "engine/quant/group_quantizer.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/dtype.h"
#include "tests/gpu/cuda_test_util.h"

namespace llmc {
namespace {

using gpu_test::ToDevice;

constexpr char kModule[] = "model.layers.5.mlp.down_proj";
constexpr double kMaxDifferFraction = 1e-3;
constexpr double kLossRelTol = 1e-3;

// ---- problems ----

// N(0, 0.02) weights with 1% outliers (x8), rounded to bf16 (the model's values).
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

// Correlated activations: x[t, c] = sum_k z[t, k] a[k, c] + s_c e[t, c] with 16 shared factors (correlation across
// channels) and per-channel scales s_c in [0.2, 2], 3% of the channels x10 (outliers), as LLM activations are.
std::vector<float> CorrelatedInputs(int64_t tokens, int64_t cols, uint32_t seed) {
  constexpr int kFactors = 16;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> a(kFactors * cols), s(cols), x(tokens * cols);
  for (auto& v : a) v = normal(rng) * 0.5f;
  for (auto& v : s) v = (0.2f + 1.8f * uni(rng)) * (uni(rng) < 0.03f ? 10.0f : 1.0f);
  std::vector<float> z(kFactors);
  for (int64_t t = 0; t < tokens; ++t) {
    for (auto& v : z) v = normal(rng);
    float* row = x.data() + t * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] = s[c] * normal(rng);
    for (int k = 0; k < kFactors; ++k)
      for (int64_t c = 0; c < cols; ++c) row[c] += z[k] * a[k * cols + c];
  }
  return x;
}

struct Problem {
  int64_t rows = 0, cols = 0, samples = 8;
  std::vector<float> w, h;
};

Problem MakeProblem(int64_t rows, int64_t cols, uint32_t seed) {
  Problem p;
  p.rows = rows;
  p.cols = cols;
  p.w = RandomWeight(rows, cols, seed);
  const int64_t tokens = 2 * cols;
  std::vector<float> x = CorrelatedInputs(tokens, cols, seed + 1);
  HessianAccumulator acc(cols);
  const int64_t per = tokens / p.samples;
  for (int64_t s = 0; s < p.samples; ++s) EXPECT_TRUE(acc.Add(x.data() + s * per * cols, per).ok());
  p.h = acc.Hessian();
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

GroupQuantizer MakeQuantizer(const Scheme& s, const std::vector<float>& w, int64_t rows, int64_t cols,
                             DType dtype = DType::kBF16) {
  std::optional<float> gs;
  if (s.format == "nvfp4-pack-quantized") {
    float amax = 0;
    for (float v : w) amax = std::max(amax, std::fabs(v));
    gs = NvFp4GlobalScale(amax, dtype);
  }
  auto q = GroupQuantizer::Create(kModule, rows, cols, dtype, s.args, s.format, gs);
  EXPECT_TRUE(q.ok()) << q.status();
  return *std::move(q);
}

// Round-to-nearest with the quantizer's rules (every group observed on w).
std::vector<float> Rtn(GroupQuantizer q, const std::vector<float>& w, int64_t rows, int64_t cols) {
  for (int64_t g = 0; g < q.num_groups(); ++g)
    EXPECT_TRUE(q.Observe(w.data(), cols, g * q.group_cols(), q.group_cols(), g).ok());
  std::vector<float> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = q.FakeQuant(w[r * cols + c], r, c / q.group_cols());
  return out;
}

int64_t CountDiffer(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
  return d;
}

// ---- fixture ----

class CudaGptqTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LLMC_SKIP_WITHOUT_CUDA();
    auto c = CudaContext::Create();
    ASSERT_TRUE(c.ok()) << c.status();
    ctx_ = std::move(*c);
  }

  struct Pair {
    absl::StatusOr<GptqResult> cpu, gpu;
  };

  // Runs both solvers on fresh quantizers of the same scheme.
  Pair RunBoth(const Problem& p, const std::vector<float>& w, const Scheme& s, const GptqOptions& opt,
               DType dtype = DType::kBF16) {
    GroupQuantizer qc = MakeQuantizer(s, w, p.rows, p.cols, dtype), qg = qc;
    EXPECT_TRUE(CudaGptqSupports(qg));
    DeviceArray<float> dh = ToDevice(p.h);
    Pair r{GptqQuantize(kModule, w.data(), p.rows, p.cols, p.h.data(), p.samples, &qc, opt),
           CudaGptqQuantize(kModule, w.data(), p.rows, p.cols, dh.data(), p.samples, &qg, opt, ctx_.get())};
    if (r.cpu.ok() && r.gpu.ok()) {
      EXPECT_EQ(qc.params().scale, qg.params().scale);
      EXPECT_EQ(qc.params().g_idx, qg.params().g_idx);
    }
    return r;
  }

  // Everything but the solution must be identical; the solution within the named tolerances.
  void ExpectSame(const Pair& r, const std::string& name) {
    ASSERT_TRUE(r.cpu.ok()) << name << ": " << r.cpu.status();
    ASSERT_TRUE(r.gpu.ok()) << name << ": " << r.gpu.status();
    const GptqResult &c = *r.cpu, &g = *r.gpu;
    EXPECT_EQ(g.actorder, c.actorder) << name;
    EXPECT_EQ(g.preserved_zeros, c.preserved_zeros) << name;
    EXPECT_EQ(g.dead_columns, c.dead_columns) << name;
    EXPECT_EQ(g.fell_back_to_rtn, c.fell_back_to_rtn) << name;
    EXPECT_EQ(g.warning, c.warning) << name;
    EXPECT_EQ(g.params.scale, c.params.scale) << name;
    EXPECT_EQ(g.params.zero_point, c.params.zero_point) << name;
    EXPECT_EQ(g.params.g_idx, c.params.g_idx) << name;
    ASSERT_EQ(g.weight.size(), c.weight.size()) << name;
    const int64_t differ = CountDiffer(g.weight, c.weight);
    const double frac = static_cast<double>(differ) / static_cast<double>(c.weight.size());
    EXPECT_LE(frac, kMaxDifferFraction) << name << ": " << differ << " of " << c.weight.size() << " values differ";
    EXPECT_NEAR(g.loss, c.loss, kLossRelTol * c.loss) << name;
    std::printf("%-28s %8lld of %9zu values differ (%.2e); loss GPU %.9g CPU %.9g (rel %.2e)\n", name.c_str(),
                static_cast<long long>(differ), c.weight.size(), frac, g.loss, c.loss,
                c.loss == 0 ? 0.0 : std::fabs(g.loss - c.loss) / c.loss);
  }

  std::unique_ptr<CudaContext> ctx_;
};

// ---- GPU == CPU across schemes, orders and shapes ----

struct Case {
  const char* name;
  Scheme (*scheme)();
  const char* actorder;
  int64_t rows, cols;
  int block_size;
  DType dtype;
  bool fp64_inverse;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CudaGptqMatchesCpu : public CudaGptqTest, public ::testing::WithParamInterface<Case> {};

TEST_P(CudaGptqMatchesCpu, SameCodesAndLoss) {
  const Case& tc = GetParam();
  Problem p = MakeProblem(tc.rows, tc.cols, 11);
  Scheme s = tc.scheme();
  GptqOptions opt;
  opt.actorder = tc.actorder;
  opt.weight_args = &s.args;
  opt.block_size = tc.block_size;
  opt.double_precision_inverse = tc.fp64_inverse;
  Pair r = RunBoth(p, p.w, s, opt, tc.dtype);
  ExpectSame(r, tc.name);
  ASSERT_TRUE(r.gpu.ok());
  EXPECT_FALSE(r.gpu->fell_back_to_rtn);
  EXPECT_GT(r.gpu->loss, 0);
}

Scheme W4A16() { return Preset("W4A16"); }
Scheme W4A16Asym() { return Preset("W4A16_ASYM"); }
Scheme W8A8() { return Preset("W8A8"); }
Scheme Fp8Tensor() { return Preset("FP8"); }
Scheme Fp8Channel() { return Preset("FP8_DYNAMIC"); }

INSTANTIATE_TEST_SUITE_P(
    Schemes, CudaGptqMatchesCpu,
    ::testing::Values(Case{"W4A16_static", W4A16, "static", 256, 1024, 128, DType::kBF16, true},
                      Case{"W4A16_none", W4A16, "none", 256, 1024, 128, DType::kBF16, true},
                      Case{"W4A16_group", W4A16, "group", 256, 1024, 128, DType::kBF16, true},
                      Case{"W4A16_ASYM_static", W4A16Asym, "static", 256, 1024, 128, DType::kBF16, true},
                      Case{"W4A16_ASYM_group", W4A16Asym, "group", 256, 1024, 128, DType::kBF16, true},
                      Case{"int4_channel", Int4Channel, "static", 256, 1024, 128, DType::kBF16, true},
                      Case{"W8A8_channel", W8A8, "static", 256, 1024, 128, DType::kBF16, true},
                      Case{"FP8_tensor", Fp8Tensor, "static", 256, 1024, 128, DType::kBF16, true},
                      Case{"FP8_DYNAMIC_channel", Fp8Channel, "static", 256, 1024, 128, DType::kBF16, true},
                      Case{"W4A16_fp16_model", W4A16, "static", 256, 1024, 128, DType::kF16, true},
                      Case{"W8A8_fp16_model", W8A8, "static", 256, 1024, 128, DType::kF16, true},
                      Case{"W4A16_fp32_inverse", W4A16, "static", 256, 1024, 128, DType::kBF16, false},
                      // Awkward sizes: rows not a multiple of 32, partial last block, blocks straddling groups.
                      Case{"W4A16_75x640_block100", W4A16, "static", 75, 640, 100, DType::kBF16, true},
                      Case{"W4A16_33x384_block1", W4A16, "none", 33, 384, 1, DType::kBF16, true},
                      // Large blocks: > 48 KiB of shared memory, and the global-memory tile.
                      Case{"W4A16_block512", W4A16, "group", 128, 1024, 512, DType::kBF16, true},
                      Case{"W8A8_block2048", W8A8, "static", 64, 1536, 2048, DType::kBF16, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// ---- bit-exact where nothing is rounded differently ----

TEST_F(CudaGptqTest, IdentityHessianIsExactlyRtnOnEveryElement) {
  // U is diagonal: no error propagates, so every value is FakeQuant of the weight -- on the device.
  const int64_t rows = 96, cols = 512;
  Problem p;
  p.rows = rows;
  p.cols = cols;
  p.samples = 1;
  p.w = RandomWeight(rows, cols, 31);
  // Saturating and tiny values too.
  for (int64_t i = 0; i < rows * cols; i += 37) p.w[i] *= 40.0f;
  for (int64_t i = 5; i < rows * cols; i += 53) p.w[i] *= 1e-4f;
  p.h.assign(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) p.h[i * cols + i] = 2.0f;
  struct S {
    const char* name;
    Scheme scheme;
    DType dtype;
  };
  for (const S& s : {S{"W4A16", W4A16(), DType::kBF16}, S{"W4A16_ASYM", W4A16Asym(), DType::kBF16},
                     S{"W8A8", W8A8(), DType::kBF16}, S{"FP8", Fp8Tensor(), DType::kBF16},
                     S{"FP8_DYNAMIC", Fp8Channel(), DType::kBF16}, S{"W4A16_ASYM fp16", W4A16Asym(), DType::kF16},
                     S{"FP8_DYNAMIC fp16", Fp8Channel(), DType::kF16}, S{"W8A8 fp32", W8A8(), DType::kF32},
                     S{"int4_channel", Int4Channel(), DType::kBF16}}) {
    GptqOptions opt;
    opt.actorder = "none";
    Pair r = RunBoth(p, p.w, s.scheme, opt, s.dtype);
    ASSERT_TRUE(r.gpu.ok()) << s.name << ": " << r.gpu.status();
    ASSERT_TRUE(r.cpu.ok()) << s.name;
    const std::vector<float> rtn = Rtn(MakeQuantizer(s.scheme, p.w, rows, cols, s.dtype), p.w, rows, cols);
    EXPECT_EQ(CountDiffer(r.gpu->weight, rtn), 0) << s.name;
    EXPECT_EQ(r.gpu->weight, r.cpu->weight) << s.name;
    EXPECT_NEAR(r.gpu->loss, r.cpu->loss, 1e-12 * r.cpu->loss) << s.name;
  }
}

TEST_F(CudaGptqTest, FactorizationFailureFallsBackToRtn) {
  const int64_t rows = 40, cols = 256;
  Problem p;
  p.rows = rows;
  p.cols = cols;
  p.samples = 1;
  p.w = RandomWeight(rows, cols, 81);
  p.h.assign(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) p.h[i * cols + i] = -1.0f;  // negative definite
  Scheme s = W4A16();
  Pair r = RunBoth(p, p.w, s, GptqOptions{});
  ASSERT_TRUE(r.gpu.ok()) << r.gpu.status();
  ASSERT_TRUE(r.cpu.ok());
  EXPECT_TRUE(r.gpu->fell_back_to_rtn);
  EXPECT_NE(r.gpu->warning.find(kModule), std::string::npos);
  EXPECT_NE(r.gpu->warning.find("round-to-nearest"), std::string::npos);
  EXPECT_EQ(r.gpu->warning, r.cpu->warning);
  EXPECT_EQ(r.gpu->weight, Rtn(MakeQuantizer(s, p.w, rows, cols), p.w, rows, cols));
  EXPECT_EQ(r.gpu->weight, r.cpu->weight);
  EXPECT_EQ(r.gpu->loss, r.cpu->loss);

  // Rank-deficient H without dampening: whether a factorization "succeeds" on round-off depends on the LAPACK;
  // reported, not asserted.
  std::vector<float> x = CorrelatedInputs(4, cols, 3);
  HessianAccumulator acc(cols);
  ASSERT_TRUE(acc.Add(x.data(), 4).ok());
  p.h = acc.Hessian();
  GptqOptions opt;
  opt.dampening_frac = 0.0;
  r = RunBoth(p, p.w, s, opt);
  ASSERT_TRUE(r.gpu.ok() && r.cpu.ok());
  std::printf("rank-4 H, no dampening: CPU fell back %d, GPU fell back %d\n  CPU: %s\n  GPU: %s\n",
              r.cpu->fell_back_to_rtn, r.gpu->fell_back_to_rtn, r.cpu->warning.c_str(), r.gpu->warning.c_str());
}

// ---- dead columns, keep masks ----

TEST_F(CudaGptqTest, DeadColumns) {
  Problem p = MakeProblem(128, 768, 71);
  const int64_t dead[] = {5, 130, 700};
  for (int64_t d : dead)
    for (int64_t i = 0; i < p.cols; ++i) p.h[d * p.cols + i] = p.h[i * p.cols + d] = 0.0f;
  Scheme s = W4A16();
  for (const char* order : {"static", "group", "none"}) {
    GptqOptions opt;
    opt.actorder = order;
    opt.weight_args = &s.args;
    Pair r = RunBoth(p, p.w, s, opt);
    ExpectSame(r, std::string("dead columns, ") + order);
    ASSERT_TRUE(r.gpu.ok());
    EXPECT_EQ(r.gpu->dead_columns, 3);
    for (int64_t row = 0; row < p.rows; ++row)
      for (int64_t d : dead) ASSERT_EQ(r.gpu->weight[row * p.cols + d], 0.0f) << order << " row " << row;
  }
}

TEST_F(CudaGptqTest, KeepMaskAndAutomaticZeroPreservation) {
  Problem p = MakeProblem(160, 1024, 91);
  Scheme s = W4A16();
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  // An explicit mask: 30% of the weights keep their values (quantized as they are).
  std::vector<uint8_t> mask(p.rows * p.cols);
  for (auto& m : mask) m = uni(rng) < 0.3f ? 0 : 1;
  const std::vector<float> rtn = Rtn(MakeQuantizer(s, p.w, p.rows, p.cols), p.w, p.rows, p.cols);
  for (const char* order : {"static", "group"}) {
    GptqOptions opt;
    opt.actorder = order;
    opt.weight_args = &s.args;
    opt.keep_mask = &mask;
    Pair r = RunBoth(p, p.w, s, opt);
    ExpectSame(r, std::string("keep_mask, ") + order);
    ASSERT_TRUE(r.gpu.ok());
    EXPECT_TRUE(r.gpu->preserved_zeros);
    if (std::string(order) == "static") {  // groups as observed: a kept weight is its RTN value
      for (size_t i = 0; i < mask.size(); ++i)
        if (!mask[i]) {
          ASSERT_EQ(r.gpu->weight[i], rtn[i]) << i;
        }
    }
  }
  // Automatic: 10% exact zeros (>= 5%) stay zero.
  std::vector<float> w = p.w;
  for (auto& v : w)
    if (uni(rng) < 0.1f) v = 0.0f;
  for (const char* order : {"static", "group"}) {
    GptqOptions opt;
    opt.actorder = order;
    opt.weight_args = &s.args;
    Pair r = RunBoth(p, w, s, opt);
    ExpectSame(r, std::string("automatic zeros, ") + order);
    ASSERT_TRUE(r.gpu.ok());
    EXPECT_TRUE(r.gpu->preserved_zeros);
    for (size_t i = 0; i < w.size(); ++i)
      if (w[i] == 0.0f) {
        ASSERT_EQ(r.gpu->weight[i], 0.0f) << i;
      }
  }
  // Large blocks with a mask: the global-memory tiles.
  GptqOptions opt;
  opt.block_size = 1024;
  opt.keep_mask = &mask;
  ExpectSame(RunBoth(p, p.w, s, opt), "keep_mask, block 1024");
}

// ---- support and errors ----

// Needs no device: the scheme is recognized on the host.
TEST(CudaGptqSupportsTest, IntegerAndFp8YesNvfp4AndMxNo) {
  const int64_t rows = 16, cols = 256;
  std::vector<float> w = RandomWeight(rows, cols, 3);
  for (const char* name : {"W4A16", "W4A16_ASYM", "W8A8", "FP8", "FP8_DYNAMIC"})
    EXPECT_TRUE(CudaGptqSupports(MakeQuantizer(Preset(name), w, rows, cols))) << name;
  EXPECT_TRUE(CudaGptqSupports(MakeQuantizer(Int4Channel(), w, rows, cols)));
  EXPECT_TRUE(CudaGptqSupports(MakeQuantizer(Preset("W4A16"), w, rows, cols, DType::kF16)));
  EXPECT_TRUE(CudaGptqSupports(MakeQuantizer(Preset("W8A8"), w, rows, cols, DType::kF32)));
  EXPECT_FALSE(CudaGptqSupports(MakeQuantizer(Preset("NVFP4A16"), w, rows, cols)));
  EXPECT_FALSE(CudaGptqSupports(MakeQuantizer(Preset("MXFP4A16"), w, rows, cols)));
  std::printf("MXFP8A16 supported on the GPU: %d\n", CudaGptqSupports(MakeQuantizer(Preset("MXFP8A16"), w, rows, cols)));
  // Wider than cuSOLVER's 32-bit potri allows.
  std::vector<float> wide(46341);
  EXPECT_FALSE(CudaGptqSupports(MakeQuantizer(Preset("W8A8"), wide, 1, 46341)));
}

TEST_F(CudaGptqTest, UnsupportedSchemesAreUnimplemented) {
  const int64_t rows = 16, cols = 256;
  std::vector<float> w = RandomWeight(rows, cols, 3);
  std::vector<float> h(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f;
  DeviceArray<float> dh = ToDevice(h);
  for (const char* name : {"NVFP4A16", "MXFP4A16"}) {
    GroupQuantizer q = MakeQuantizer(Preset(name), w, rows, cols);
    auto res = CudaGptqQuantize(kModule, w.data(), rows, cols, dh.data(), 1, &q, GptqOptions{}, ctx_.get());
    EXPECT_EQ(res.status().code(), absl::StatusCode::kUnimplemented) << name << ": " << res.status();
  }
}

// Through the context's pinned buffer, several solves of growing and shrinking sizes in a row (the buffer grows
// once and is reused), each result in reused storage full of stale values: the same bytes as a fresh solve.
TEST_F(CudaGptqTest, PinnedCopiesAndReusedStorageGiveTheSameResult) {
  Scheme s = W4A16();
  for (int64_t rows : {64, 512, 32, 512}) {
    const int64_t cols = 256;
    std::vector<float> w = RandomWeight(rows, cols, 90 + static_cast<uint32_t>(rows));
    std::vector<float> h(cols * cols, 0.0f);
    for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f + 0.01f * static_cast<float>(i % 7);
    DeviceArray<float> dh = ToDevice(h);
    GroupQuantizer q1 = MakeQuantizer(s, w, rows, cols), q2 = q1;
    auto fresh = CudaGptqQuantize(kModule, w.data(), rows, cols, dh.data(), 8, &q1, GptqOptions{}, ctx_.get());
    std::vector<float> storage(static_cast<size_t>(rows * cols), std::numeric_limits<float>::quiet_NaN());
    const float* buffer = storage.data();
    GptqOptions opt;
    opt.result_storage = &storage;
    auto reused = CudaGptqQuantize(kModule, w.data(), rows, cols, dh.data(), 8, &q2, opt, ctx_.get());
    ASSERT_TRUE(fresh.ok() && reused.ok()) << fresh.status() << " " << reused.status();
    EXPECT_EQ(reused->weight, fresh->weight) << rows;
    EXPECT_EQ(reused->loss, fresh->loss) << rows;
    EXPECT_EQ(reused->weight.data(), buffer) << rows;
  }
}

TEST_F(CudaGptqTest, BadInputsFailAsOnTheCpu) {
  const int64_t rows = 8, cols = 128;
  std::vector<float> w = RandomWeight(rows, cols, 81);
  Scheme s = W4A16();
  std::vector<float> h(cols * cols, 0.0f);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f;
  auto run = [&](const std::vector<float>& weight, const std::vector<float>& hess, int64_t samples,
                 const GptqOptions& opt = {}) {
    GroupQuantizer qc = MakeQuantizer(s, w, rows, cols), qg = qc;
    DeviceArray<float> dh = ToDevice(hess);
    auto cpu = GptqQuantize(kModule, weight.data(), rows, cols, hess.data(), samples, &qc, opt);
    auto gpu = CudaGptqQuantize(kModule, weight.data(), rows, cols, dh.data(), samples, &qg, opt, ctx_.get());
    EXPECT_EQ(gpu.status().code(), cpu.status().code()) << gpu.status() << " vs " << cpu.status();
    EXPECT_EQ(gpu.status().message(), cpu.status().message());
    return gpu.status();
  };
  std::vector<float> bad = h;
  bad[3 * cols + 7] = bad[7 * cols + 3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(run(w, bad, 1).code(), absl::StatusCode::kInvalidArgument);
  bad = h;
  bad[9 * cols + 9] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(run(w, bad, 1).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> wn = w;
  wn[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(run(wn, h, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run(w, h, 0).code(), absl::StatusCode::kFailedPrecondition);
  GptqOptions opt;
  opt.block_size = 0;
  EXPECT_FALSE(run(w, h, 1, opt).ok());
  opt = {};
  opt.actorder = "sideways";
  EXPECT_FALSE(run(w, h, 1, opt).ok());
  opt = {};
  opt.dampening_frac = -1;
  EXPECT_FALSE(run(w, h, 1, opt).ok());
}

// ---- Llama-3-8B shapes: timing ----

// Wall time of one CudaGptqQuantize call (host weight in, host result out, H already on the device), everything
// included: validation, observation, factorization, column loop, transfers. The phase breakdown is logged at debug.
TEST_F(CudaGptqTest, Llama3_8BTiming) {
  struct Shape {
    const char* name;
    int64_t rows, cols;
    bool compare_cpu;
  };
  spdlog::set_level(spdlog::level::debug);
  for (const Shape& sh : {Shape{"q_proj", 4096, 4096, true}, Shape{"down_proj", 4096, 14336, false}}) {
    const int64_t rows = sh.rows, cols = sh.cols, tokens = 2048;
    std::vector<float> w = RandomWeight(rows, cols, 7);
    std::vector<float> x = CorrelatedInputs(tokens, cols, 8);
    DeviceArray<float> dx = ToDevice(x);
    auto dh = DeviceArray<float>::Create(cols * cols, "H");
    ASSERT_TRUE(dh.ok());
    ASSERT_EQ(cudaMemset(dh->data(), 0, cols * cols * sizeof(float)), cudaSuccess);
    ASSERT_EQ(ctx_->blas()->AccumulateXtX(dx.data(), tokens, cols, 2.0f / 8, dh->data()), "");
    ASSERT_TRUE(ctx_->Synchronize().ok());
    Scheme s = W4A16();
    GptqOptions opt;
    opt.weight_args = &s.args;
    for (int rep = 0; rep < 2; ++rep) {
      GroupQuantizer q = MakeQuantizer(s, w, rows, cols);
      const auto t0 = std::chrono::steady_clock::now();
      auto res = CudaGptqQuantize(kModule, w.data(), rows, cols, dh->data(), 8, &q, opt, ctx_.get());
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      ASSERT_TRUE(res.ok()) << res.status();
      EXPECT_FALSE(res->fell_back_to_rtn);
      std::printf("%s [%lld, %lld] W4A16 actorder static, fp64 factor: CUDA GPTQ %.1f ms (run %d) on %s; loss %.6g\n",
                  sh.name, static_cast<long long>(rows), static_cast<long long>(cols), ms, rep + 1,
                  ctx_->device_name().c_str(), res->loss);
      if (rep == 1 && sh.compare_cpu) {
        std::vector<float> h(cols * cols);
        ASSERT_EQ(cudaMemcpy(h.data(), dh->data(), h.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        GroupQuantizer qc = MakeQuantizer(s, w, rows, cols);
        const auto c0 = std::chrono::steady_clock::now();
        auto cpu = GptqQuantize(kModule, w.data(), rows, cols, h.data(), 8, &qc, opt);
        const double cpu_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();
        ASSERT_TRUE(cpu.ok());
        const int64_t differ = CountDiffer(res->weight, cpu->weight);
        std::printf("%s CPU GptqQuantize %.1f ms; %lld of %lld values differ; loss rel diff %.2e\n", sh.name, cpu_ms,
                    static_cast<long long>(differ), static_cast<long long>(rows * cols),
                    std::fabs(res->loss - cpu->loss) / cpu->loss);
        EXPECT_LE(static_cast<double>(differ), kMaxDifferFraction * rows * cols);
        EXPECT_NEAR(res->loss, cpu->loss, kLossRelTol * cpu->loss);
      }
    }
  }
  spdlog::set_level(spdlog::level::info);
}

}  // namespace
}  // namespace llmc
