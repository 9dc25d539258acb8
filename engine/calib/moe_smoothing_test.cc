// AWQ, SmoothQuant and pruning on mixture-of-experts models (Qwen3-MoE, Mixtral, Qwen2-MoE, Llama 4) end to end on the
// CPU:
// llm-compressor's MoE mappings (AWQ: post_attention_layernorm balanced against the router and every expert's
// gate/up, up -> down per expert; SmoothQuant: attention only), the function they keep, the checkpoint `llmc eval`
// reads back, and the routers that pruning leaves alone.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/calib/moe_test_util.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/moe.h"
#include "engine/model/weight_loader.h"
#include "engine/pipeline/run_job.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
using moe_test::kText;

constexpr char kIgnore[] =
    "[lm_head, 're:.*mlp\\.gate$', 're:.*block_sparse_moe\\.gate$', 're:.*shared_expert_gate$', "
    "'re:.*feed_forward\\.router$']";
// int4 symmetric, groups of 16 (the tiny models' in_features 64, 80, 32 and 48 are multiples).
constexpr char kW4G16[] =
    "config_groups: {group_0: {targets: [Linear], weights: {num_bits: 4, type: int, symmetric: true, strategy: "
    "group, group_size: 16}}}";

class MoeSmoothingTest : public moe_test::MoeTest {
 protected:
  JobSpec Spec(const std::string& model, const std::string& out, const std::string& recipe) {
    JobSpec s;
    s.model_path = model;
    s.output_path = tmp_ / out;
    s.recipe_yaml = recipe;
    s.dataset = tmp_.Write("calib.txt", std::string(kText) + kText + kText);
    s.num_samples = 4;
    s.seq_len = 24;
    s.threads = 2;
    return s;
  }

  // A dense tensor of a checkpoint as fp32.
  static std::vector<float> Dense(const std::string& dir, const std::string& name) {
    auto lm = CausalLm::Open(dir, {.threads = 1});
    EXPECT_TRUE(lm.ok()) << lm.status();
    if (!lm.ok()) return {};
    const ModelTensor* t = (*lm)->dir().Find(name);
    EXPECT_NE(t, nullptr) << dir << ": " << name;
    if (!t) return {};
    auto v = (*lm)->loader().LoadDense(name, t->info->shape);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::vector<float>();
  }
};

// AWQ W4A16 (g16) on each MoE family: the job runs with llm-compressor's MoE mappings, the router and the experts'
// gate/up columns absorb the scales the post-attention norm gives up (norm * router column is preserved, so tokens
// route as before), every expert's up -> down is searched on its own inputs, and `llmc eval` reads the checkpoint
// back. The tiny models are random (perplexity ~400 over a 128-token vocabulary, where RTN can even land below
// bf16), so perplexity only has to hold within noise of RTN's; what AWQ improves is checked on its objective below.
TEST_F(MoeSmoothingTest, AwqUsesTheMoeMappingsAndHoldsPerplexity) {
  for (const std::string name : {"tiny-qwen3moe", "tiny-mixtral", "tiny-qwen2moe", "tiny-llama4text"}) {
    SCOPED_TRACE(name);
    const std::string model = Model(name);
    auto rtn = RunJob(Spec(model, name + "-rtn", absl::StrCat("QuantizationModifier: {ignore: ", kIgnore, ", ", kW4G16, "}\n")));
    ASSERT_TRUE(rtn.ok()) << rtn.status();
    const std::string out = tmp_ / (name + "-awq");
    auto awq = RunJob(Spec(model, name + "-awq",
                           absl::StrCat("AWQModifier: {n_grid: 10, ignore: ", kIgnore, ", ", kW4G16, "}\n")));
    ASSERT_TRUE(awq.ok()) << awq.status();

    auto lm = CausalLm::Open(model, {.threads = 1});
    ASSERT_TRUE(lm.ok());
    const ModelSpec& spec = (*lm)->spec();
    const json blocks = Report(out)["solve"]["blocks"];
    ASSERT_EQ(blocks.size(), static_cast<size_t>(spec.num_layers));
    for (int l = 0; l < spec.num_layers; ++l) {
      const std::string p = spec.layout.LayerPrefix(l);
      std::set<std::string> balanced;  // each choice's first balance layer
      for (const auto& c : blocks[l]["awq"]) balanced.insert(c["balance"].get<std::string>());
      EXPECT_TRUE(balanced.count(p + "self_attn.q_proj")) << l;
      if (!spec.moe.IsSparse(l)) {  // a dense layer of an MoE model: the dense mappings
        EXPECT_TRUE(balanced.count(p + spec.mlp_prefix + "gate_proj")) << l;
        EXPECT_TRUE(balanced.count(p + spec.mlp_prefix + "down_proj")) << l;
        continue;
      }
      const std::string router = MoeRouterName(spec.moe.style, p);
      EXPECT_TRUE(balanced.count(router)) << l;  // post_attention_layernorm -> router + experts' gate/up
      for (int64_t e = 0; e < spec.moe.num_experts; ++e)  // up -> down, once per expert
        EXPECT_TRUE(balanced.count(MoeExpertName(spec.moe.style, p, e, "down"))) << l << " expert " << e;
      if (spec.moe.shared_intermediate > 0) {
        EXPECT_TRUE(balanced.count(MoeSharedName(p, "down", spec.moe.style))) << l;
      }
      // The norm gave up s, the router's columns took it: their product is the original up to bf16 rounding.
      const std::vector<float> n0 = Dense(model, p + "post_attention_layernorm.weight");
      const std::vector<float> n1 = Dense(out, p + "post_attention_layernorm.weight");
      const std::vector<float> r0 = Dense(model, router + ".weight"), r1 = Dense(out, router + ".weight");
      ASSERT_EQ(r0.size(), static_cast<size_t>(spec.moe.num_experts * spec.hidden_size));
      EXPECT_NE(n0, n1) << l;
      for (int64_t e = 0; e < spec.moe.num_experts; ++e)
        for (int64_t c = 0; c < spec.hidden_size; ++c) {
          const float before = n0[c] * r0[e * spec.hidden_size + c], after = n1[c] * r1[e * spec.hidden_size + c];
          ASSERT_NEAR(after, before, 1.6e-2 * std::fabs(before) + 1e-6) << l << " router " << e << " col " << c;
        }
      if (spec.moe.shared_intermediate > 0 && spec.moe.style != MoeStyle::kLlama4) {
        // the shared expert's gate (Qwen2-MoE; Llama 4's shared expert has none) reads the same norm: balanced too
        const std::string g = MoeSharedName(p, "gate_weight") + ".weight";
        const std::vector<float> g0 = Dense(model, g), g1 = Dense(out, g);
        for (int64_t c = 0; c < spec.hidden_size; ++c)
          ASSERT_NEAR(n1[c] * g1[c], n0[c] * g0[c], 1.6e-2 * std::fabs(n0[c] * g0[c]) + 1e-6) << l << " col " << c;
      }
    }
    // `llmc eval` reads it back; its `weights` field names the experts' format.
    auto back = CausalLm::Open(out, {.threads = 1});
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ((*back)->WeightStorage(), "pack-quantized");
    EXPECT_EQ((*lm)->WeightStorage(), "dense");
    const double bf16 = Perplexity(model), p_rtn = Perplexity(tmp_ / (name + "-rtn")), p_awq = Perplexity(out);
    std::printf("%s: perplexity bf16 %.4f, W4A16 g16 RTN %.4f, AWQ %.4f\n", name.c_str(), bf16, p_rtn, p_awq);
    EXPECT_TRUE(std::isfinite(p_awq));
    EXPECT_LT(p_awq, p_rtn * 1.1);
  }
}

// Without duo scaling AWQ's first grid point (r = 0) is s = 1, i.e. round-to-nearest, so the report's initial_loss
// is RTN's error of each parent's output (for the MoE mapping: the whole routed MoE MLP's output) on the
// calibration inputs, and loss the chosen scales'. On every mapping the search does at least as well as RTN, and on
// the MoE MLP mappings (router + every expert's gate/up) and the experts' up -> down it does strictly better on some.
TEST_F(MoeSmoothingTest, AwqBeatsRoundToNearestOnItsObjective) {
  for (const std::string name : {"tiny-qwen3moe", "tiny-mixtral"}) {
    SCOPED_TRACE(name);
    const std::string model = Model(name);
    const std::string out = tmp_ / (name + "-awq-noduo");
    auto awq = RunJob(Spec(model, name + "-awq-noduo",
                           absl::StrCat("AWQModifier: {n_grid: 10, duo_scaling: false, ignore: ", kIgnore, ", ",
                                        kW4G16, "}\n")));
    ASSERT_TRUE(awq.ok()) << awq.status();
    int moe_better = 0, expert_better = 0, moe_mappings = 0;
    const json rep = Report(out);
    for (const auto& b : rep["solve"]["blocks"])
      for (const auto& c : b["awq"]) {
        const double loss = c["loss"], initial = c["initial_loss"];
        const std::string first = c["balance"];
        ASSERT_GT(initial, 0.0) << first;
        EXPECT_LE(loss, initial) << first;
        if (IsMoeRouter(first)) {
          ++moe_mappings;
          moe_better += loss < initial;
          std::printf("%s %s: MoE MLP output error, RTN %.4g, AWQ %.4g (r = %.1f)\n", name.c_str(), first.c_str(),
                      initial, loss, c["ratio"].get<double>());
        }
        if (first.find(".experts.") != std::string::npos) expert_better += loss < initial;
      }
    EXPECT_GT(moe_mappings, 0);
    EXPECT_GT(moe_better, 0);
    EXPECT_GT(expert_better, 0);
  }
}

// With routed-only calibration an expert that no token chose has no inputs: its up -> down mapping is skipped (as
// llm-compressor skips it) and the job still runs.
TEST_F(MoeSmoothingTest, AwqSkipsExpertsWithoutTokens) {
  const std::string model = Model("tiny-qwen3moe-nonorm");  // 8 experts, 2 per token; experts 24 wide: groups of 8
  JobSpec spec = Spec(model, "awq-routed",
                      absl::StrCat("AWQModifier: {n_grid: 4, ignore: ", kIgnore,
                                   ", config_groups: {group_0: {targets: [Linear], weights: {num_bits: 4, type: int, "
                                   "symmetric: true, strategy: group, group_size: 8}}}}\n"));
  spec.moe_calibrate_all_experts = false;
  spec.num_samples = 1;
  spec.seq_len = 3;  // 3 tokens x 2 experts: at least 2 of the 8 experts see nothing
  auto r = RunJob(spec);
  ASSERT_TRUE(r.ok()) << r.status();
  const json rep = Report(spec.output_path);
  int64_t expert_mappings = 0;
  for (const auto& b : rep["solve"]["blocks"])
    for (const auto& c : b["awq"]) expert_mappings += c["balance"].get<std::string>().find(".experts.") != std::string::npos;
  auto lm = CausalLm::Open(model, {.threads = 1});
  ASSERT_TRUE(lm.ok());
  int sparse = 0;
  for (int l = 0; l < (*lm)->spec().num_layers; ++l) sparse += (*lm)->spec().moe.IsSparse(l);
  EXPECT_GT(expert_mappings, 0);
  EXPECT_LE(expert_mappings, sparse * (8 - 2));  // at most 6 of 8 experts per sparse layer saw tokens
  EXPECT_TRUE(std::isfinite(Perplexity(spec.output_path)));
}

// SmoothQuant on an MoE model smooths attention only (llm-compressor's Qwen-MoE and Mixtral mappings): the input
// norms change, the post-attention norms and the routers stay as they were, and the W8A8 checkpoint evaluates.
TEST_F(MoeSmoothingTest, SmoothQuantSmoothsAttentionOnly) {
  for (const std::string name : {"tiny-qwen3moe", "tiny-mixtral", "tiny-llama4text"}) {
    SCOPED_TRACE(name);
    const std::string model = Model(name);
    JobSpec s = Spec(model, name + "-sq", "");
    s.recipe_yaml.clear();
    s.scheme = "W8A8";
    s.algorithm = "smoothquant+gptq";
    auto r = RunJob(s);
    ASSERT_TRUE(r.ok()) << r.status();
    auto lm = CausalLm::Open(model, {.threads = 1});
    ASSERT_TRUE(lm.ok());
    const ModelSpec& spec = (*lm)->spec();
    for (int l = 0; l < spec.num_layers; ++l) {
      const std::string p = spec.layout.LayerPrefix(l);
      EXPECT_NE(Dense(model, p + "input_layernorm.weight"), Dense(s.output_path, p + "input_layernorm.weight")) << l;
      EXPECT_EQ(Dense(model, p + "post_attention_layernorm.weight"),
                Dense(s.output_path, p + "post_attention_layernorm.weight"))
          << l;
      if (spec.moe.IsSparse(l)) {
        const std::string router = MoeRouterName(spec.moe.style, p) + ".weight";
        EXPECT_EQ(Dense(model, router), Dense(s.output_path, router)) << l;
      }
    }
    const double before = Perplexity(model), after = Perplexity(s.output_path);
    std::printf("%s: perplexity bf16 %.4f, W8A8 SmoothQuant+GPTQ (activations quantized) %.4f\n", name.c_str(),
                before, after);
    EXPECT_TRUE(std::isfinite(after));
    EXPECT_LT(after, 1.2 * before);
  }
}

// A kv cache scheme on Llama 4: every layer gets k_scale and v_scale, measured on k as the cache stores it (after
// the interleaved rotation and the L2 norm; decoder_block_view_test checks the range itself), and the checkpoint
// evaluates with the cache quantized.
TEST_F(MoeSmoothingTest, KvCacheScalesOnLlama4) {
  const std::string model = Model("tiny-llama4text");
  JobSpec s = Spec(model, "l4-kv",
                   absl::StrCat("QuantizationModifier: {ignore: ", kIgnore, ", ", kW4G16,
                                ", kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, dynamic: false, "
                                "symmetric: true}}\n"));
  auto r = RunJob(s);
  ASSERT_TRUE(r.ok()) << r.status();
  auto lm = CausalLm::Open(model, {.threads = 1});
  ASSERT_TRUE(lm.ok());
  for (int l = 0; l < (*lm)->spec().num_layers; ++l)
    for (const char* which : {"k_scale", "v_scale"}) {
      const std::vector<float> v = Dense(s.output_path, absl::StrCat("model.layers.", l, ".self_attn.", which));
      ASSERT_EQ(v.size(), 1u) << l << " " << which;
      EXPECT_GT(v[0], 0.0f) << l << " " << which;
    }
  const double before = Perplexity(model), after = Perplexity(s.output_path);
  std::printf("tiny-llama4text: perplexity bf16 %.4f, W4A16 g16 + fp8 kv cache %.4f\n", before, after);
  EXPECT_TRUE(std::isfinite(after));
  EXPECT_LT(after, 1.2 * before);
}

// A mapping that smooths an MoE layer's post_attention_layernorm into only some of the Linears reading it would
// change the function: refused, naming a module left out; a mapping that balances all of them runs.
TEST_F(MoeSmoothingTest, PartialMoeMappingsAreRefused) {
  const std::string model = Model("tiny-qwen2moe");
  // No router.
  auto r = RunJob(Spec(model, "no-router",
                       absl::StrCat("AWQModifier: {ignore: ", kIgnore, ", ", kW4G16,
                                    ", mappings: [{smooth_layer: 're:.*post_attention_layernorm$', balance_layers: "
                                    "['re:.*experts.*gate_proj$', 're:.*experts.*up_proj$']}]}\n")));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("AWQModifier.mappings[0]"));
  EXPECT_THAT(r.status().message(), HasSubstr("model.layers.0.mlp.gate"));
  // The router and experts, but not the shared expert.
  auto s = RunJob(Spec(model, "no-shared",
                       "SmoothQuantModifier: {mappings: [[['re:.*mlp\\.gate$', 're:.*experts.*gate_proj$', "
                       "'re:.*experts.*up_proj$'], 're:.*post_attention_layernorm$']]}\nGPTQModifier: {scheme: W8A8, "
                       "ignore: " +
                           std::string(kIgnore) + "}\n"));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("SmoothQuantModifier.mappings[0]"));
  EXPECT_THAT(s.status().message(), HasSubstr("shared_expert"));
  // Every reader of the norm balanced: allowed (llm-compressor leaves it out by default, a recipe may ask for it),
  // and the router and the shared expert's gate keep norm * weight.
  const std::string full =
      "SmoothQuantModifier: {mappings: [[['re:.*mlp\\.gate$', 're:.*experts.*gate_proj$', 're:.*experts.*up_proj$', "
      "'re:.*shared_expert\\.gate_proj$', 're:.*shared_expert\\.up_proj$', 're:.*shared_expert_gate$'], "
      "'re:.*post_attention_layernorm$']]}\nGPTQModifier: {scheme: W8A8, ignore: " +
      std::string(kIgnore) + "}\n";
  auto ok = RunJob(Spec(model, "all-readers", full));
  ASSERT_TRUE(ok.ok()) << ok.status();
  const std::string out = tmp_ / "all-readers";
  const std::string p = "model.layers.0.";
  const std::vector<float> n0 = Dense(model, p + "post_attention_layernorm.weight"),
                           n1 = Dense(out, p + "post_attention_layernorm.weight");
  EXPECT_NE(n0, n1);
  for (const std::string w : {"mlp.gate.weight", "mlp.shared_expert_gate.weight"}) {
    const std::vector<float> w0 = Dense(model, p + w), w1 = Dense(out, p + w);
    const size_t H = n0.size();
    for (size_t i = 0; i < w0.size(); ++i)
      ASSERT_NEAR(n1[i % H] * w1[i], n0[i % H] * w0[i], 1.6e-2 * std::fabs(n0[i % H] * w0[i]) + 1e-6) << w << " " << i;
  }
}

// SparseGPT / Wanda with `targets: [Linear]` prune every expert but leave the routers dense, as quantization
// leaves them unquantized; a router is pruned only when a target names it.
TEST_F(MoeSmoothingTest, PruningLeavesRoutersAloneUnlessTargeted) {
  for (const std::string method : {"SparseGPTModifier", "WandaPruningModifier"}) {
    for (const std::string name : {"tiny-mixtral", "tiny-qwen2moe"}) {
      SCOPED_TRACE(method + " " + name);
      const std::string model = tmp_.path() + "/" + name;
      if (!std::filesystem::exists(model)) Model(name);
      const std::string tag = name + "-" + method;
      auto r = RunJob(Spec(model, tag, method + ": {sparsity: 0.5, mask_structure: '2:4', ignore: [lm_head]}\n"));
      ASSERT_TRUE(r.ok()) << r.status();
      auto lm = CausalLm::Open(model, {.threads = 1});
      ASSERT_TRUE(lm.ok());
      const ModelSpec& spec = (*lm)->spec();
      const std::string p = spec.layout.LayerPrefix(0);
      const std::string router = MoeRouterName(spec.moe.style, p) + ".weight";
      EXPECT_EQ(Dense(model, router), Dense(tmp_ / tag, router));
      if (spec.moe.shared_intermediate > 0) {
        const std::string g = MoeSharedName(p, "gate_weight") + ".weight";
        EXPECT_EQ(Dense(model, g), Dense(tmp_ / tag, g));
      }
      auto zeros = [](const std::vector<float>& v) {
        int64_t z = 0;
        for (float x : v) z += x == 0.0f;
        return static_cast<double>(z) / static_cast<double>(v.size());
      };
      EXPECT_NEAR(zeros(Dense(tmp_ / tag, MoeExpertName(spec.moe.style, p, 1, "down") + ".weight")), 0.5, 0.01);
      // Named explicitly, the router is pruned too.
      const std::string named = tag + "-router";
      auto n = RunJob(Spec(model, named,
                           method + ": {sparsity: 0.5, mask_structure: '2:4', targets: [Linear, 're:.*\\.gate$'], "
                                    "ignore: [lm_head]}\n"));
      ASSERT_TRUE(n.ok()) << n.status();
      EXPECT_NEAR(zeros(Dense(tmp_ / named, router)), 0.5, 0.01);
    }
  }
}

}  // namespace
}  // namespace llmc
