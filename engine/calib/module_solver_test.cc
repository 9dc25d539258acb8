// ModuleSolver on its own: the tensors it plans and writes, inline and on its pool (the pool path runs only
// with a GPU backend in the pipeline, so it is checked here against the inline one).
#include "engine/calib/module_solver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/tensor/model_dtype.h"

namespace llmc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Only GPTQ reaches the backend here; its default solves on the host.
class HostGptqBackend final : public BlockBackend {
 public:
  absl::Status Calibrate(const DecoderBlock&, const Wants&, CalibHooks*) override { return absl::OkStatus(); }
  absl::Status Propagate(const DecoderBlock&) override { return absl::OkStatus(); }
};

constexpr int64_t kRows = 16, kCols = 256;

CompressionRecipe Recipe(const std::string& yaml) {
  auto r = ParseCompressionRecipe(yaml, "test.yaml");
  EXPECT_TRUE(r.ok()) << r.status();
  return std::move(*r);
}

LinearWeight Linear(const std::string& name, uint32_t seed) {
  LinearWeight lw;
  lw.name = name;
  lw.out_features = kRows;
  lw.in_features = kCols;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  lw.weight.resize(kRows * kCols);
  for (float& v : lw.weight) v = RoundBF16(normal(rng));
  return lw;
}

// Statistics of random inputs: a Hessian and a range.
GroupStats Stats(uint32_t seed) {
  GroupStats s;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(64 * kCols);
  for (float& v : x) v = normal(rng);
  s.hessian = std::make_unique<HessianAccumulator>(kCols);
  EXPECT_TRUE(s.hessian->Add(x.data(), 64, 4).ok());
  s.min = -3.5f;
  s.max = 4.25f;
  s.amax = 4.25f;
  s.tokens = 64;
  return s;
}

// Solves two modules and returns what was emitted, by tensor name.
struct Written {
  std::map<std::string, std::vector<uint8_t>> tensors;
  std::vector<std::vector<float>> weights;  // the compressed values left in each Linear
  nlohmann::json modules = nlohmann::json::array();
  std::vector<std::string> warnings;
};
Written SolveTwo(const CompressionRecipe& recipe, bool background) {
  HostGptqBackend backend;
  ModuleSolver solver(recipe, *recipe.quant, &backend, DType::kBF16, 2, background);
  Written out;
  std::mutex mu;
  EmitFn emit = [&](const std::string& name, absl::Span<const uint8_t> bytes) {
    std::lock_guard<std::mutex> lock(mu);
    out.tensors[name].assign(bytes.begin(), bytes.end());
    return absl::OkStatus();
  };
  GroupStats s1 = Stats(1), s2 = Stats(2);
  LinearWeight a = Linear("model.layers.0.mlp.up_proj", 3), b = Linear("model.layers.0.mlp.down_proj", 4);
  const int g = recipe.quant->Match(a.name, "Linear");
  EXPECT_GE(g, 0);
  EXPECT_TRUE(solver.Solve(&a, g, DType::kBF16, std::nullopt, &s1, nullptr, nlohmann::json(), emit, &out.warnings).ok());
  EXPECT_TRUE(solver.Solve(&b, g, DType::kBF16, std::nullopt, &s2, nullptr, {{"prune", 1}}, emit, &out.warnings).ok());
  EXPECT_TRUE(solver.Finish(&out.modules).ok());
  out.weights = {a.weight, b.weight};
  return out;
}

TEST(ModuleSolverTest, PlansTheExtraTensorsOfTheScheme) {
  HostGptqBackend backend;
  const std::string m = "model.layers.0.mlp.up_proj";
  CompressionRecipe gptq = Recipe("GPTQModifier: {scheme: W4A16, actorder: group}\n");
  ModuleSolver a(gptq, *gptq.quant, &backend, DType::kBF16, 1, false);
  auto e = a.ExtraTensors(m, 0, kCols, DType::kBF16);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 1u);
  EXPECT_EQ((*e)[0].suffix, "weight_g_idx");
  EXPECT_EQ((*e)[0].dtype, DType::kI32);
  CompressionRecipe fp8 = Recipe("QuantizationModifier: {scheme: FP8}\n");
  ModuleSolver b(fp8, *fp8.quant, &backend, DType::kBF16, 1, false);
  auto f = b.ExtraTensors(m, 0, kCols, DType::kF16);
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(f->size(), 1u);
  EXPECT_EQ((*f)[0].suffix, "input_scale");
  EXPECT_EQ((*f)[0].dtype, DType::kF16);
  CompressionRecipe w4 = Recipe("QuantizationModifier: {scheme: W4A16}\n");
  ModuleSolver c(w4, *w4.quant, &backend, DType::kBF16, 1, false);
  EXPECT_TRUE(c.ExtraTensors(m, 0, kCols, DType::kBF16)->empty());
}

// Inline and on the pool, GPTQ (with g_idx) and static FP8 write the same bytes and reports.
TEST(ModuleSolverTest, ThePoolWritesWhatInlineWrites) {
  for (const char* yaml : {"GPTQModifier: {scheme: W4A16, actorder: group}\n", "QuantizationModifier: {scheme: FP8}\n"}) {
    CompressionRecipe r = Recipe(yaml);
    Written inline_ = SolveTwo(r, false), pooled = SolveTwo(r, true);
    EXPECT_EQ(inline_.tensors, pooled.tensors) << yaml;
    EXPECT_EQ(inline_.weights, pooled.weights) << yaml;
    ASSERT_EQ(pooled.modules.size(), 2u);
    EXPECT_EQ(pooled.modules[0]["name"], "model.layers.0.mlp.down_proj");  // name order
    EXPECT_EQ(pooled.modules[0]["prune"], 1);
    EXPECT_EQ(pooled.modules[1]["name"], "model.layers.0.mlp.up_proj");
    for (const auto& m : pooled.modules) {
      EXPECT_GT(m["relative_weight_error"].get<double>(), 0.0) << yaml;
    }
    // The compressed values stay in the Linear, in the model dtype.
    for (float v : pooled.weights[0]) ASSERT_EQ(v, RoundBF16(v));
  }
  Written g = SolveTwo(Recipe("GPTQModifier: {scheme: W4A16, actorder: group}\n"), true);
  EXPECT_EQ(g.modules[0]["algorithm"], "gptq");
  EXPECT_THAT(g.tensors, ::testing::Contains(::testing::Key("model.layers.0.mlp.up_proj.weight_g_idx")));
  Written s = SolveTwo(Recipe("QuantizationModifier: {scheme: FP8}\n"), true);
  EXPECT_EQ(s.modules[0]["algorithm"], "rtn");
  EXPECT_EQ(s.modules[0]["input_amax"], 4.25);
  EXPECT_EQ(s.tensors.at("model.layers.0.mlp.up_proj.input_scale").size(), 2u);  // bf16
}

// A module written on the pool that fails surfaces in Finish; so does a missing range for a static scale.
TEST(ModuleSolverTest, ErrorsOfThePoolSurfaceInFinish) {
  CompressionRecipe r = Recipe("QuantizationModifier: {scheme: FP8}\n");
  HostGptqBackend backend;
  for (bool background : {false, true}) {
    ModuleSolver solver(r, *r.quant, &backend, DType::kBF16, 2, background);
    LinearWeight a = Linear("model.layers.0.mlp.up_proj", 3);
    std::vector<std::string> warnings;
    EmitFn emit = [](const std::string&, absl::Span<const uint8_t>) { return absl::OkStatus(); };
    absl::Status solved = solver.Solve(&a, 0, DType::kBF16, std::nullopt, nullptr, nullptr, nlohmann::json(), emit,
                                       &warnings);
    nlohmann::json modules = nlohmann::json::array();
    absl::Status finished = solver.Finish(&modules);
    const absl::Status& s = background ? finished : solved;
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << background;
    EXPECT_THAT(std::string(s.message()), HasSubstr("up_proj: saw no calibration tokens"));
    EXPECT_TRUE(modules.empty());
  }
}

// Batches (a decoder block's modules): a batch is finished on its own while an earlier one is still being written,
// and each Finish(batch) reports its batch's modules only.
TEST(ModuleSolverTest, ABatchFinishesAloneWhileAnEarlierOneIsStillWritten) {
  CompressionRecipe r = Recipe("GPTQModifier: {scheme: W4A16}\n");
  HostGptqBackend backend;
  ModuleSolver solver(r, *r.quant, &backend, DType::kBF16, 2, /*background=*/true);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  EmitFn emit = [&](const std::string& name, absl::Span<const uint8_t>) {
    if (absl::StartsWith(name, "model.layers.0.")) released.wait();  // batch 0 is held until released
    return absl::OkStatus();
  };
  std::vector<std::string> warnings;
  GroupStats s1 = Stats(1), s2 = Stats(2);
  LinearWeight a = Linear("model.layers.0.mlp.up_proj", 3), b = Linear("model.layers.1.mlp.up_proj", 4);
  ASSERT_TRUE(solver.Solve(&a, 0, DType::kBF16, std::nullopt, &s1, nullptr, nlohmann::json(), emit, &warnings).ok());
  const int64_t first = solver.Seal();
  ASSERT_TRUE(solver.Solve(&b, 0, DType::kBF16, std::nullopt, &s2, nullptr, nlohmann::json(), emit, &warnings).ok());
  const int64_t second = solver.Seal();
  EXPECT_NE(first, second);
  nlohmann::json m1 = nlohmann::json::array(), m0 = nlohmann::json::array();
  ASSERT_TRUE(solver.Finish(second, &m1).ok());  // returns while batch 0 still waits in its emit
  ASSERT_EQ(m1.size(), 1u);
  EXPECT_EQ(m1[0]["name"], "model.layers.1.mlp.up_proj");
  release.set_value();
  ASSERT_TRUE(solver.Finish(first, &m0).ok());
  ASSERT_EQ(m0.size(), 1u);
  EXPECT_EQ(m0[0]["name"], "model.layers.0.mlp.up_proj");
  nlohmann::json rest = nlohmann::json::array();
  ASSERT_TRUE(solver.Finish(&rest).ok());
  EXPECT_TRUE(rest.empty());
}

}  // namespace
}  // namespace llmc
