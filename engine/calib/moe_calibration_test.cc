// Calibrated compression of mixture-of-experts models (Qwen3-MoE, Mixtral, Qwen2-MoE) end to end on the CPU:
// GPTQ W4A16 with every expert calibrated (moe_calibrate_all_experts, the default) and without (an expert
// that no token was routed to gets round-to-nearest scales), the routers left unquantized, the output's
// tensor names and shapes as transformers and compressed-tensors expect, and the runtime (`llmc eval`'s)
// reading it back.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/algo/block_view.h"
#include "engine/format/job_recipe.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/model_test_util.h"
#include "engine/model/perplexity.h"
#include "engine/model/vl_test_util.h"
#include "engine/model/weight_loader.h"
#include "engine/pipeline/run_job.h"
#include "engine/tensor/dtype.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/calib/moe_test_util.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;
using moe_test::kText;
using testing::TempDir;

// W4A16 groups of 8: every tiny model's in_features (64, 80, 32, 24, 48) is a multiple.
constexpr char kGptqRecipe[] =
    "quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      ignore: [lm_head, 're:.*mlp\\.gate$', "
    "'re:.*block_sparse_moe\\.gate$', 're:.*shared_expert_gate$', "
    "'re:.*feed_forward\\.router$']\n      config_groups:\n        group_0:\n"
    "          targets: [Linear]\n          weights: {num_bits: 4, type: int, symmetric: true, strategy: "
    "group, "
    "group_size: 8}\n";

class MoeCalibrationTest : public moe_test::MoeTest {
 protected:
  JobSpec Spec(const std::string& model, const std::string& out) {
    JobSpec s;
    s.model_path = model;
    s.output_path = tmp_ / out;
    s.recipe_yaml = kGptqRecipe;
    s.dataset = tmp_.Write("calib.txt", std::string(kText) + kText + kText);
    s.num_samples = 4;
    s.seq_len = 24;
    s.threads = 2;
    return s;
  }
};

// Every expert (and dense MLP) is solved by GPTQ from all calibration tokens; the routers stay as they were.
TEST_F(MoeCalibrationTest, GptqCalibratesEveryExpertOnEveryToken) {
  for (const std::string name :
       {"tiny-qwen3moe", "tiny-qwen3moe-nonorm", "tiny-mixtral", "tiny-qwen2moe", "tiny-llama4text"}) {
    SCOPED_TRACE(name);
    const std::string model = Model(name);
    const std::string out = tmp_ / (name + "-gptq");
    auto s = RunJob(Spec(model, name + "-gptq"));
    ASSERT_TRUE(s.ok()) << s.status();
    json rep = Report(out)["solve"];
    EXPECT_EQ(rep["moe"]["calibrate_all_experts"], true);
    EXPECT_TRUE(rep["moe"]["modules_without_tokens"].empty());
    const int64_t tokens = rep["calibration"]["tokens"].get<int64_t>();
    ASSERT_GT(tokens, 0);
    int experts = 0;
    for (const auto& m : rep["modules"]) {
      const std::string n = m["name"];
      EXPECT_EQ(m["algorithm"], "gptq") << n;
      // The Hessian of every module, each expert's included, saw every calibration token.
      EXPECT_EQ(m["calibration_tokens"].get<int64_t>(), tokens) << n;
      experts += n.find(".experts.") != std::string::npos;
    }
    auto lm = CausalLm::Open(model, {.threads = 1});
    ASSERT_TRUE(lm.ok());
    const ModelSpec& spec = (*lm)->spec();
    int sparse = 0;
    for (int l = 0; l < spec.num_layers; ++l) sparse += spec.moe.IsSparse(l);
    EXPECT_EQ(experts, sparse * spec.moe.num_experts * 3);

    // Names and shapes: each expert's Linears as on disk (transformers' checkpoint names, which vLLM's MoE
    // loaders map onto their fused experts), in compressed-tensors' pack-quantized layout; routers
    // unquantized.
    auto dir = ModelDir::Open(out);
    ASSERT_TRUE(dir.ok()) << dir.status();
    for (int l = 0; l < spec.num_layers; ++l) {
      if (!spec.moe.IsSparse(l)) {
        EXPECT_NE((*dir)->Find(absl::StrCat("model.layers.", l, ".", spec.mlp_prefix, "gate_proj.weight_packed")), nullptr);
        continue;
      }
      const std::string router = MoeRouterName(spec.moe.style, spec.layout.LayerPrefix(l));
      const ModelTensor* r = (*dir)->Find(router + ".weight");
      ASSERT_NE(r, nullptr) << router;
      EXPECT_EQ(r->info->dtype, DType::kBF16);
      EXPECT_EQ(r->info->shape, (std::vector<int64_t>{spec.moe.num_experts, spec.hidden_size}));
      for (int64_t e = 0; e < spec.moe.num_experts; ++e) {
        const int64_t I = spec.moe.expert_intermediate, H = spec.hidden_size;
        for (auto [which, rows, cols] :
             {std::tuple<const char*, int64_t, int64_t>{"gate", I, H}, {"up", I, H}, {"down", H, I}}) {
          const std::string m = MoeExpertName(spec.moe.style, spec.layout.LayerPrefix(l), e, which);
          const ModelTensor* p = (*dir)->Find(m + ".weight_packed");
          ASSERT_NE(p, nullptr) << m;
          EXPECT_EQ(p->info->dtype, DType::kI32);
          EXPECT_EQ(p->info->shape, (std::vector<int64_t>{rows, cols / 8}));
          const ModelTensor* sc = (*dir)->Find(m + ".weight_scale");
          ASSERT_NE(sc, nullptr) << m;
          EXPECT_EQ(sc->info->shape, (std::vector<int64_t>{rows, cols / 8}));
          EXPECT_EQ((*dir)->Find(m + ".weight"), nullptr) << m;
        }
      }
      if (spec.moe.shared_intermediate > 0) {
        const std::string p = spec.layout.LayerPrefix(l);
        EXPECT_NE((*dir)->Find(MoeSharedName(p, "gate", spec.moe.style) + ".weight_packed"), nullptr);
        if (spec.moe.style != MoeStyle::kLlama4) {  // Llama 4's shared expert has no gate
          EXPECT_NE((*dir)->Find(MoeSharedName(p, "gate_weight") + ".weight"), nullptr);
        }
      }
      // Llama 4's fused expert tensors were replaced by the per-expert Linears above.
      EXPECT_EQ((*dir)->Find(MoeFusedExpertsName(spec.layout.LayerPrefix(l), "gate_up_proj")), nullptr);
      EXPECT_EQ((*dir)->Find(MoeFusedExpertsName(spec.layout.LayerPrefix(l), "down_proj")), nullptr);
    }
    const json& q = (*dir)->config_json()["quantization_config"];
    EXPECT_EQ(q["format"], "pack-quantized");
    bool router_ignored = false;
    for (const auto& i : q["ignore"]) router_ignored |= IsMoeRouter(i.get<std::string>());
    EXPECT_TRUE(router_ignored);
    // `llmc eval` reads it back and it is still close to the original model.
    const double before = Perplexity(model), after = Perplexity(out);
    std::printf("%s: perplexity bf16 %.4f, GPTQ W4A16 g8 (every expert calibrated) %.4f\n", name.c_str(),
                before, after);
    EXPECT_TRUE(std::isfinite(after));
    EXPECT_LT(after, 1.5 * before);
  }
}

// A run resumed after its first block (the staged experts read back, dequantized, for the replay) writes the bytes of
// an uninterrupted one.
TEST_F(MoeCalibrationTest, ResumeIsByteIdentical) {
  const std::string model = Model("tiny-qwen3moe");
  JobSpec spec = Spec(model, "whole");
  auto whole = RunJob(spec);
  ASSERT_TRUE(whole.ok()) << whole.status();
  spec.output_path = tmp_ / "resumed";
  std::atomic<bool> cancel{false};
  JobControl c;
  c.staging_dir = tmp_ / "staging";
  c.keep_staging = true;
  c.cancel = &cancel;
  c.on_block_done = [&](int layer) {
    if (layer == 0) cancel = true;
  };
  auto first = RunJob(spec, c);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kCancelled);
  cancel = false;
  c.resume_from_block = 1;
  auto second = RunJob(spec, c);
  ASSERT_TRUE(second.ok()) << second.status();
  for (const auto& e : fs::directory_iterator(tmp_ / "whole")) {
    const std::string name = e.path().filename().string();
    if (name == "compression_report.json") continue;  // timings differ
    std::ifstream a(e.path(), std::ios::binary), b(spec.output_path + "/" + name, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_TRUE(sa == sb) << name << " differs after resume";
  }
}

// With the option off, each expert sees its routed tokens only; an expert that none reached is quantized
// round-to-nearest, with finite scales and a warning.
TEST_F(MoeCalibrationTest, RoutedOnlyCalibrationFallsBackForExpertsWithoutTokens) {
  const std::string model = Model("tiny-qwen3moe-nonorm");  // 8 experts, 2 per token
  JobSpec spec = Spec(model, "routed");
  spec.moe_calibrate_all_experts = false;
  spec.num_samples = 1;
  spec.seq_len = 3;  // 3 tokens x 2 experts: at least 2 of the 8 experts see nothing
  std::vector<std::string> warnings;
  JobControl control;
  control.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  auto s = RunJob(spec, control);
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string out = tmp_ / "routed";
  json rep = Report(out)["solve"];
  EXPECT_EQ(rep["moe"]["calibrate_all_experts"], false);
  const int64_t tokens = rep["calibration"]["tokens"].get<int64_t>();
  ASSERT_GT(tokens, 0);
  ASSERT_LE(tokens, 3);
  // 8 experts, 2 per token: at least 8 - 2 * tokens experts (3 Linears each) saw nothing.
  const json& empty = rep["moe"]["modules_without_tokens"];
  ASSERT_GE(static_cast<int64_t>(empty.size()), (8 - 2 * tokens) * 3);
  int64_t routed = 0;
  for (const auto& m : rep["modules"]) {
    const std::string n = m["name"];
    if (n.find(".experts.") == std::string::npos) {
      EXPECT_EQ(m["calibration_tokens"], tokens) << n;
      continue;
    }
    if (n.find("gate_proj") != std::string::npos) routed += m["calibration_tokens"].get<int64_t>();
    if (m["calibration_tokens"] == 0) {
      EXPECT_EQ(m["algorithm"], "rtn") << n;
      EXPECT_EQ(m["no_calibration_tokens"], true) << n;
    }
  }
  EXPECT_EQ(routed, 2 * tokens);  // top-2 routing
  bool warned = false;
  for (const auto& w : warnings) warned |= w.find("no calibration token was routed") != std::string::npos;
  EXPECT_TRUE(warned);
  // The scales of an expert without tokens are finite and positive.
  auto dir = ModelDir::Open(out);
  ASSERT_TRUE(dir.ok());
  const std::string first = empty[0];
  const ModelTensor* sc = (*dir)->Find(first + ".weight_scale");
  ASSERT_NE(sc, nullptr) << first;
  auto lm = CausalLm::Open(out, {.threads = 1});
  ASSERT_TRUE(lm.ok()) << lm.status();
  auto scales = (*lm)->loader().LoadDense(first + ".weight_scale", sc->info->shape);
  ASSERT_TRUE(scales.ok()) << scales.status();
  for (float v : *scales) {
    ASSERT_TRUE(std::isfinite(v)) << first;
    ASSERT_GT(v, 0.0f) << first;
  }
  const double ppl = Perplexity(out);
  std::printf(
      "tiny-qwen3moe-nonorm, routed-only calibration on %lld tokens: %zu expert Linears without tokens, "
      "perplexity %.4f\n",
      static_cast<long long>(tokens), empty.size(), ppl);
  EXPECT_TRUE(std::isfinite(ppl));
}

TEST_F(MoeCalibrationTest, OptionAndAlgorithmsAreRefusedWhereTheyCannotApply) {
  const std::string moe = Model("tiny-mixtral");
  // Data-free: no calibration to apply it to.
  JobSpec s = Spec(moe, "rtn");
  s.recipe_yaml.clear();
  s.scheme = "W4A16";
  s.dataset.clear();
  s.moe_calibrate_all_experts = true;
  auto r = RunJob(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("moe_calibrate_all_experts"));
  // A dense model.
  JobSpec d = Spec(testing_util::TestDataDir() + "/tiny-qwen3", "dense");
  d.model_path = Model("tiny-qwen3");
  d.moe_calibrate_all_experts = false;
  r = RunJob(d);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not a mixture-of-experts model"));
  // A recipe that targets the routers: vLLM loads them unquantized.
  JobSpec g = Spec(moe, "router");
  g.recipe_yaml =
      "GPTQModifier: {ignore: [lm_head], config_groups: {g: {targets: [Linear], weights: {num_bits: 4, type: "
      "int, "
      "symmetric: true, strategy: group, group_size: 8}}}}\n";
  r = RunJob(g);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("block_sparse_moe.gate"));
}

// Mixtral's w1 and w3 read one input (one Hessian, one NVFP4 global scale per expert, as vLLM fuses w13).
TEST(MoeInputGroupTest, MixtralGateAndUpShareTheirInput) {
  EXPECT_EQ(InputGroup("model.layers.0.block_sparse_moe.experts.1.w1"),
            "model.layers.0.block_sparse_moe.experts.1.w1_w3");
  EXPECT_EQ(InputGroup("model.layers.0.block_sparse_moe.experts.1.w3"),
            "model.layers.0.block_sparse_moe.experts.1.w1_w3");
  EXPECT_EQ(InputGroup("model.layers.0.block_sparse_moe.experts.1.w2"),
            "model.layers.0.block_sparse_moe.experts.1.w2");
  EXPECT_EQ(InputGroup("model.layers.0.mlp.experts.1.up_proj"), "model.layers.0.mlp.experts.1.gate_up");
}

// A preset without --ignore leaves the routers out by itself (data-free).
TEST_F(MoeCalibrationTest, PresetsIgnoreRoutersByDefault) {
  const std::string model = Model("tiny-qwen2moe");
  JobSpec s;
  s.model_path = model;
  s.output_path = tmp_ / "rtn";
  s.scheme = "FP8_DYNAMIC";
  s.threads = 2;
  auto r = RunJob(s);
  ASSERT_TRUE(r.ok()) << r.status();
  auto dir = ModelDir::Open(s.output_path);
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ((*dir)->Find("model.layers.0.mlp.gate.weight")->info->dtype, DType::kBF16);
  EXPECT_EQ((*dir)->Find("model.layers.0.mlp.shared_expert_gate.weight")->info->dtype, DType::kBF16);
  EXPECT_NE((*dir)->Find("model.layers.0.mlp.experts.3.down_proj.weight_scale"), nullptr);
  EXPECT_EQ((*dir)->Find("model.layers.0.mlp.experts.3.down_proj.weight")->info->dtype, DType::kF8E4M3);
}

// Llama 4's fused 3-D experts, data-free: one quantized Linear per expert and projection under the names
// vLLM's Llama 4 loader reads (feed_forward.experts.N.{gate,up,down}_proj), each the transposed slice of the
// fused tensor.
TEST_F(MoeCalibrationTest, Llama4FusedExpertsAreSplitIntoQuantizedLinears) {
  const std::string src = testing_util::TestDataDir() + "/tiny-llama4text";
  JobSpec s;
  s.model_path = src;
  s.output_path = tmp_ / "llama4";
  s.scheme = "W8A8";
  s.threads = 2;
  auto r = RunJob(s);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->fused_experts_split, 4);  // gate_up and down of 2 layers
  auto in = ModelDir::Open(src);
  auto out = ModelDir::Open(s.output_path);
  ASSERT_TRUE(in.ok() && out.ok());
  auto src_w = WeightLoader::Create(in->get());
  auto out_w = WeightLoader::Create(out->get());
  ASSERT_TRUE(src_w.ok() && out_w.ok()) << out_w.status();
  const int64_t E = 4, H = 64, I = 32;
  for (int l = 0; l < 2; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".feed_forward.");
    EXPECT_EQ((*out)->Find(p + "experts.gate_up_proj"), nullptr);
    EXPECT_EQ((*out)->Find(p + "experts.down_proj"), nullptr);
    EXPECT_EQ((*out)->Find(p + "router.weight")->info->dtype, DType::kBF16);  // routers stay unquantized
    EXPECT_EQ((*out)->Find(p + "shared_expert.gate_proj.weight")->info->dtype, DType::kI8);
    auto gate_up = (*src_w)->LoadDense(p + "experts.gate_up_proj", {E, H, 2 * I});
    auto down = (*src_w)->LoadDense(p + "experts.down_proj", {E, I, H});
    ASSERT_TRUE(gate_up.ok() && down.ok());
    for (int64_t e = 0; e < E; ++e) {
      for (auto [leaf, rows, cols] : {std::tuple<const char*, int64_t, int64_t>{"gate_proj", I, H},
                                      {"up_proj", I, H},
                                      {"down_proj", H, I}}) {
        const std::string m = absl::StrCat(p, "experts.", e, ".", leaf);
        const ModelTensor* qw = (*out)->Find(m + ".weight");
        ASSERT_NE(qw, nullptr) << m;
        EXPECT_EQ(qw->info->dtype, DType::kI8) << m;
        EXPECT_EQ(qw->info->shape, (std::vector<int64_t>{rows, cols})) << m;
        EXPECT_EQ((*out)->Find(m + ".weight_scale")->info->shape, (std::vector<int64_t>{rows, 1})) << m;
        auto q = (*out_w)->LoadLinearWeight(m, rows, cols);
        ASSERT_TRUE(q.ok()) << q.status();
        // W[r][c] is the fused tensor's [e][c][col0 + r]: int8 per channel is within 1% of it.
        double num = 0, den = 0;
        const std::string lf = leaf;
        for (int64_t rr = 0; rr < rows; ++rr)
          for (int64_t c = 0; c < cols; ++c) {
            const float w = lf == "down_proj"
                                ? (*down)[(e * I + c) * H + rr]
                                : (*gate_up)[(e * H + c) * 2 * I + (lf == "up_proj" ? I : 0) + rr];
            num += (w - (*q)[rr * cols + c]) * (w - (*q)[rr * cols + c]);
            den += double(w) * w;
          }
        EXPECT_LT(std::sqrt(num / den), 0.01) << m;
      }
    }
  }
  const json& q = (*out)->config_json()["quantization_config"];
  bool router_ignored = false;
  for (const auto& i : q["ignore"]) router_ignored |= i == "model.layers.0.feed_forward.router";
  EXPECT_TRUE(router_ignored);
  // A calibrated job cannot keep the fused tensors (it runs the experts as Linears).
  JobSpec g = s;
  g.model_path = Model("tiny-llama4text");  // with a tokenizer
  g.output_path = tmp_ / "llama4-gptq";
  g.algorithm = "gptq";
  g.dataset = tmp_.Write("c.txt", std::string(kText) + kText);
  g.num_samples = 2;
  g.seq_len = 16;
  g.ignore = {"lm_head", "re:.*router$", "re:.*experts$"};
  g.ignore_given = true;
  auto refused = RunJob(g);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("cannot keep them fused")) << refused.status();
}

// Llama 4 as the hub stores it (Llama4ForConditionalGeneration, the decoder under language_model.model.): GPTQ
// compresses the text decoder exactly as it compresses the text model, experts split under the wrapper's names.
TEST_F(MoeCalibrationTest, Llama4VisionLanguageCheckpointCompressesItsTextDecoder) {
  const std::string text = Model("tiny-llama4text");
  const std::string vl = tmp_ / "llama4-vl";
  ASSERT_TRUE(testing_util::WrapAsLlama4Vl(text, vl).ok());
  auto a = RunJob(Spec(text, "l4-text-gptq"));
  auto b = RunJob(Spec(vl, "l4-vl-gptq"));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  auto da = ModelDir::Open(tmp_ / "l4-text-gptq");
  auto db = ModelDir::Open(tmp_ / "l4-vl-gptq");
  ASSERT_TRUE(da.ok() && db.ok());
  int compared = 0;
  for (const auto& t : (*da)->tensors()) {
    const std::string& n = t.info->name;
    const ModelTensor* u = (*db)->Find("language_model." + n);
    ASSERT_NE(u, nullptr) << n;
    EXPECT_EQ(u->file->Data(*u->info), t.file->Data(*t.info)) << n;
    compared += absl::StrContains(n, ".feed_forward.experts.");
  }
  EXPECT_EQ(compared, 2 * 4 * 3 * 3);  // layers x experts x projections x (packed, scale, shape)
  EXPECT_EQ((*db)->config_json()["architectures"][0], "Llama4ForConditionalGeneration");
  EXPECT_EQ((*db)->Find("language_model.model.layers.0.feed_forward.experts.gate_up_proj"), nullptr);
  EXPECT_DOUBLE_EQ(Perplexity(tmp_ / "l4-vl-gptq"), Perplexity(tmp_ / "l4-text-gptq"));
}

// SparseGPT 2:4 on Llama 4 runs each sliced expert as any Linear: every expert written pruned 2:4 under its own
// name, the router left dense.
TEST_F(MoeCalibrationTest, Llama4SparseGptPrunesEverySlicedExpert) {
  JobSpec s = Spec(Model("tiny-llama4text"), "l4-sparsegpt");
  s.recipe_yaml =
      "SparseGPTModifier: {sparsity: 0.5, mask_structure: '2:4', ignore: [lm_head, 're:.*feed_forward\\.router$']}\n";
  auto r = RunJob(s);
  ASSERT_TRUE(r.ok()) << r.status();
  auto dir = ModelDir::Open(tmp_ / "l4-sparsegpt");
  ASSERT_TRUE(dir.ok());
  auto w = WeightLoader::Create(dir->get());
  ASSERT_TRUE(w.ok());
  for (int e = 0; e < 4; ++e) {
    const std::string m = MoeExpertName(MoeStyle::kLlama4, "model.layers.1.", e, "down");
    auto v = (*w)->LoadLinearWeight(m, 64, 32);
    ASSERT_TRUE(v.ok()) << m << ": " << v.status();
    for (size_t i = 0; i < v->size(); i += 4) {
      int zeros = 0;
      for (size_t k = i; k < i + 4; ++k) zeros += (*v)[k] == 0.0f;
      ASSERT_GE(zeros, 2) << m << " at " << i;
    }
  }
  EXPECT_EQ((*dir)->Find("model.layers.0.feed_forward.experts.gate_up_proj"), nullptr);
  auto router = (*w)->LoadLinearWeight("model.layers.0.feed_forward.router", 4, 64);
  ASSERT_TRUE(router.ok());
  int zeros = 0;
  for (float x : *router) zeros += x == 0.0f;
  EXPECT_LT(zeros, 16);  // dense (random weights have no zeros to speak of)
}

// GPT-OSS's interleaved fused experts cannot be written in a form vLLM loads: refused naming the tensor, or
// kept in bf16 with a warning when ignored.
TEST_F(MoeCalibrationTest, GptOssFusedExpertsAreRefusedOrKeptWithAWarning) {
  const std::string src = testing_util::TestDataDir() + "/tiny-gptoss";
  JobSpec s;
  s.model_path = src;
  s.output_path = tmp_ / "gptoss";
  s.scheme = "W8A8";
  s.threads = 2;
  auto r = RunJob(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("model.layers.0.mlp.experts."));  // the first fused tensor stored
  EXPECT_THAT(r.status().message(), HasSubstr("fused 3-D expert weights"));
  EXPECT_THAT(r.status().message(), HasSubstr("GPT-OSS"));
  s.ignore = {"lm_head", "re:.*experts$", "re:.*router$"};
  s.ignore_given = true;
  std::vector<std::string> warnings;
  JobControl control;
  control.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  r = RunJob(s, control);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->warnings.empty());
  EXPECT_THAT(r->warnings[0], HasSubstr("kept unquantized"));
  EXPECT_EQ(warnings.size(), r->warnings.size());
  auto out = ModelDir::Open(s.output_path);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)->Find("model.layers.0.mlp.experts.gate_up_proj")->info->dtype, DType::kBF16);
  EXPECT_EQ((*out)->Find("model.layers.0.self_attn.q_proj.weight")->info->dtype, DType::kI8);
}

}  // namespace
}  // namespace llmc
