// The per-family smoothing mappings and the norms a block of each family offers to SmoothQuant and AWQ.
#include "engine/calib/decoder_block_view.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/calib/calib_hooks.h"
#include "engine/format/algorithms.h"
#include "engine/model/decoder_block.h"
#include "engine/model/model_test_util.h"
#include "engine/model/moe.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<CausalLm> Open(const std::string& name) {
  auto lm = CausalLm::Open(testing_util::TestDataDir() + "/" + name, {.threads = 1});
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? std::move(*lm) : nullptr;
}

TEST(FamilySmoothMappingsTest, LlamaLikeFamiliesKeepTheDefaults) {
  auto lm = Open("tiny-qwen2-swa");
  ASSERT_NE(lm, nullptr);
  auto m = FamilySmoothMappings(DefaultAwqMappings(), lm->spec(), "AWQModifier");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), DefaultAwqMappings().size());
  EXPECT_EQ((*m)[2].smooth, "re:.*post_attention_layernorm");
}

TEST(FamilySmoothMappingsTest, GemmaSmoothsPreFeedforwardNorm) {
  for (const char* name : {"tiny-gemma2", "tiny-gemma3"}) {
    auto lm = Open(name);
    ASSERT_NE(lm, nullptr);
    for (const auto& defaults : {DefaultSmoothQuantMappings(), DefaultAwqMappings()}) {
      auto m = FamilySmoothMappings(defaults, lm->spec(), "AWQModifier");
      ASSERT_TRUE(m.ok()) << m.status();
      ASSERT_EQ(m->size(), defaults.size());
      for (size_t i = 0; i < m->size(); ++i) {
        EXPECT_EQ((*m)[i].balance, defaults[i].balance);
        EXPECT_EQ((*m)[i].smooth, defaults[i].smooth == "re:.*post_attention_layernorm"
                                      ? "re:.*pre_feedforward_layernorm"
                                      : defaults[i].smooth);
      }
    }
    // A recipe's own mapping onto post_attention_layernorm would scale the residual stream: refused.
    std::vector<SmoothMapping> own = {{{"re:.*gate_proj", "re:.*up_proj"}, "re:.*post_attention_layernorm"}};
    auto bad = FamilySmoothMappings(own, lm->spec(), "SmoothQuantModifier");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("SmoothQuantModifier"));
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("pre_feedforward_layernorm"));
    // The block offers input_layernorm and pre_feedforward_layernorm, as their effective (1 + w) scale.
    auto block = lm->LoadBlock(0);
    ASSERT_TRUE(block.ok());
    std::map<std::string, GroupStats> stats;
    QuantConfig cfg;
    DecoderBlockView view(block->get(), lm.get(), &stats, &cfg, DType::kBF16);
    auto norms = view.norms();
    ASSERT_EQ(norms.size(), 2u);
    EXPECT_EQ(norms[0].first, "model.layers.0.input_layernorm");
    EXPECT_EQ(norms[1].first, "model.layers.0.pre_feedforward_layernorm");
    EXPECT_EQ(view.norm_offset(), 1.0f);
    auto raw = lm->loader().LoadDense("model.layers.0.pre_feedforward_layernorm.weight", {lm->spec().hidden_size});
    ASSERT_TRUE(raw.ok());
    for (size_t i = 0; i < raw->size(); ++i) EXPECT_EQ((*norms[1].second)[i], (*raw)[i] + 1.0f);
  }
}

TEST(FamilySmoothMappingsTest, PhiUsesTheFusedLinears) {
  auto lm = Open("tiny-phi3");
  ASSERT_NE(lm, nullptr);
  auto sq = FamilySmoothMappings(DefaultSmoothQuantMappings(), lm->spec(), "SmoothQuantModifier");
  ASSERT_TRUE(sq.ok());
  ASSERT_EQ(sq->size(), 2u);
  EXPECT_EQ((*sq)[0].balance, std::vector<std::string>{"re:.*qkv_proj"});
  EXPECT_EQ((*sq)[1].balance, std::vector<std::string>{"re:.*gate_up_proj"});
  auto awq = FamilySmoothMappings(DefaultAwqMappings(), lm->spec(), "AWQModifier");
  ASSERT_TRUE(awq.ok());
  ASSERT_EQ(awq->size(), 4u);
  EXPECT_EQ((*awq)[1].smooth, "re:.*qkv_proj$");
  EXPECT_EQ((*awq)[3].smooth, "re:.*gate_up_proj$");
  // The block's Linears are the fused ones, named as on disk.
  auto block = lm->LoadBlock(1);
  ASSERT_TRUE(block.ok());
  std::vector<std::string> names;
  for (const LinearWeight* l : (*block)->linears()) names.push_back(l->name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.1.self_attn.qkv_proj", "model.layers.1.self_attn.o_proj",
                                             "model.layers.1.mlp.gate_up_proj", "model.layers.1.mlp.down_proj"}));
  EXPECT_EQ(InputGroup(names[0]), "model.layers.1.self_attn.qkv");
  EXPECT_EQ(InputGroup(names[2]), "model.layers.1.mlp.gate_up");
}

// Mixture-of-experts families: SmoothQuant keeps the attention mapping only; AWQ gets the MoE mappings (the dense
// one only where some layer is dense), under Mixtral's names for Mixtral.
TEST(FamilySmoothMappingsTest, MoeFamiliesUseTheMoeMappings) {
  for (const char* name : {"tiny-qwen3moe", "tiny-qwen2moe", "tiny-mixtral"}) {
    SCOPED_TRACE(name);
    auto lm = Open(name);
    ASSERT_NE(lm, nullptr);
    auto sq = FamilySmoothMappings(DefaultSmoothQuantMappings(), lm->spec(), "SmoothQuantModifier");
    ASSERT_TRUE(sq.ok());
    ASSERT_EQ(sq->size(), 1u);
    EXPECT_EQ((*sq)[0].smooth, "re:.*input_layernorm$");
    auto awq = FamilySmoothMappings(DefaultAwqMappings(), lm->spec(), "AWQModifier");
    ASSERT_TRUE(awq.ok());
    const bool mixtral = std::string(name) == "tiny-mixtral", dense_layer = std::string(name) == "tiny-qwen3moe";
    ASSERT_EQ(awq->size(), dense_layer ? 5u : 4u);
    EXPECT_EQ((*awq)[2].smooth, "re:.*post_attention_layernorm$");
    EXPECT_EQ((*awq)[2].balance[0], mixtral ? "re:.*block_sparse_moe\\.gate$" : "re:.*mlp\\.gate$");
    EXPECT_TRUE(CheckMoeSmoothMappings(*awq, {}, true, lm->spec(), "AWQModifier").ok());
    // The router left out, or ignored where the modifier does not keep it: refused, naming it.
    std::vector<SmoothMapping> partial = *awq;
    partial[2].balance.erase(partial[2].balance.begin());
    auto bad = CheckMoeSmoothMappings(partial, {}, true, lm->spec(), "AWQModifier");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(std::string(bad.message()), HasSubstr("AWQModifier.mappings[2]"));
    EXPECT_THAT(std::string(bad.message()), HasSubstr(mixtral ? "block_sparse_moe.gate" : "mlp.gate"));
    const std::vector<std::string> ignore = {mixtral ? "re:.*block_sparse_moe\\.gate$" : "re:.*mlp\\.gate$"};
    EXPECT_TRUE(CheckMoeSmoothMappings(*awq, ignore, true, lm->spec(), "AWQModifier").ok());
    EXPECT_FALSE(CheckMoeSmoothMappings(*awq, ignore, false, lm->spec(), "SmoothQuantModifier").ok());
  }
}

// The parent of the MoE mapping is the whole MoE MLP, run with substituted weights that are swapped back; an
// expert's gate/up cannot lead a mapping.
TEST(DecoderBlockViewTest, MoeParentIsTheWholeMoeMlp) {
  auto lm = Open("tiny-qwen3moe");
  ASSERT_NE(lm, nullptr);
  const ModelSpec& spec = lm->spec();
  ASSERT_TRUE(spec.moe.IsSparse(0));
  auto block = lm->LoadBlock(0);
  ASSERT_TRUE(block.ok());
  MoeMlp& moe = (*block)->moe;
  const int64_t rows = 6, H = spec.hidden_size;
  std::map<std::string, GroupStats> stats;
  GroupStats& st = stats[InputGroup(moe.router.name)];
  st.captured = testing_util::RandomVector(rows * H, 5);
  st.captured_tokens = st.tokens = rows;
  st.captured_seq_len = rows;
  QuantConfig cfg;
  DecoderBlockView view(block->get(), lm.get(), &stats, &cfg, DType::kBF16);
  std::vector<float> ref(rows * H), out;
  ASSERT_TRUE(RunMoeMlp(spec.moe, moe, st.captured.data(), rows, H, ref.data(), nullptr, lm->context()).ok());
  std::vector<LinearWeight*> balance = {&moe.router, &moe.gate[0], &moe.up[0]};
  ASSERT_TRUE(view.ParentForward(balance, {nullptr, nullptr, nullptr}, &out).ok());
  EXPECT_EQ(out, ref);
  const std::vector<float> held = moe.up[0].weight, zeros(held.size(), 0.0f);
  ASSERT_TRUE(view.ParentForward(balance, {nullptr, nullptr, &zeros}, &out).ok());
  EXPECT_NE(out, ref);                   // expert 0 ran without its up projection
  EXPECT_EQ(moe.up[0].weight, held);     // and the block's weight is back
  GroupStats& ex = stats[InputGroup(moe.gate[0].name)];
  ex.captured = st.captured;
  ex.captured_tokens = ex.tokens = ex.captured_seq_len = rows;
  std::vector<LinearWeight*> expert_first = {&moe.gate[0], &moe.up[0]};
  auto r = view.ParentForward(expert_first, {nullptr, nullptr}, &out);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.message()), HasSubstr("list the router (model.layers.0.mlp.gate) first"));
}

// Llama 4: the router is balanced with every expert's gate/up and the shared expert's (whose input the router's
// sigmoid scales), the dense layers' MLP is feed_forward.gate_proj/up_proj, and leaving the router out is refused.
TEST(FamilySmoothMappingsTest, Llama4BalancesTheRouterWithTheExperts) {
  auto lm = Open("tiny-llama4text");
  ASSERT_NE(lm, nullptr);
  auto awq = FamilySmoothMappings(DefaultAwqMappings(), lm->spec(), "AWQModifier");
  ASSERT_TRUE(awq.ok()) << awq.status();
  ASSERT_EQ(awq->size(), 4u);  // both layers of the tiny model are sparse
  EXPECT_EQ((*awq)[2].smooth, "re:.*post_attention_layernorm$");
  EXPECT_EQ((*awq)[2].balance[0], "re:.*feed_forward\\.router$");
  EXPECT_EQ((*awq)[2].balance.size(), 5u);
  EXPECT_TRUE(CheckMoeSmoothMappings(*awq, {}, true, lm->spec(), "AWQModifier").ok());
  for (const std::string& r : MoeNormReaders(lm->spec(), 0)) EXPECT_EQ(r.find("shared_expert_gate"), std::string::npos) << r;
  std::vector<SmoothMapping> partial = *awq;
  partial[2].balance.erase(partial[2].balance.begin());
  auto bad = CheckMoeSmoothMappings(partial, {}, true, lm->spec(), "AWQModifier");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.message()), HasSubstr("feed_forward.router"));
  partial = *awq;
  partial[2].balance.pop_back();  // the shared expert's up_proj
  bad = CheckMoeSmoothMappings(partial, {}, true, lm->spec(), "AWQModifier");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.message()), HasSubstr("feed_forward.shared_expert.up_proj"));
  auto sq = FamilySmoothMappings(DefaultSmoothQuantMappings(), lm->spec(), "SmoothQuantModifier");
  ASSERT_TRUE(sq.ok());
  ASSERT_EQ(sq->size(), 1u);
}

// Records each Linear's inputs while CalibHooks collects the kv-cache ranges (and captures q_proj's input).
class RecordingHooks : public CalibHooks {
 public:
  using CalibHooks::CalibHooks;
  absl::Status OnInput(const LinearWeight& w, absl::Span<const float> input, int64_t tokens) override {
    inputs[w.name].assign(input.begin(), input.end());
    return CalibHooks::OnInput(w, input, tokens);
  }
  std::map<std::string, std::vector<float>> inputs;
};

// What AWQ's attention parent and the kv-cache observer recompute beside the block equals what the block's forward
// pass computes, on a Llama 4 variant with a rope layer (interleaved pairs, L2 norm after the rotation), a no-rope
// layer (q scaled by position) and chunked attention (chunks of 4 in sequences of 12).
TEST(DecoderBlockViewTest, Llama4AttentionParentAndKvObserverFollowTheBlock) {
  const std::string tmp = testing_util::WriteLlama4Variant(4);
  ASSERT_FALSE(tmp.empty());
  auto opened = CausalLm::Open(tmp, {.threads = 1});
  std::filesystem::remove_all(tmp);
  ASSERT_TRUE(opened.ok()) << opened.status();
  CausalLm& lm = **opened;
  const ModelSpec& spec = lm.spec();
  ASSERT_TRUE(spec.uses_rope(0));
  ASSERT_FALSE(spec.uses_rope(1));
  ASSERT_EQ(spec.chunk(0), 4);
  const int64_t seqs = 2, T = 12, H = spec.hidden_size, rows = seqs * T;
  for (int layer = 0; layer < 2; ++layer) {
    SCOPED_TRACE(layer);
    auto block = lm.LoadBlock(layer);
    ASSERT_TRUE(block.ok());
    DecoderBlock& b = **block;
    Wants wants;
    wants.kv = true;
    wants.capture = {InputGroup(b.q_proj.name)};
    wants.capture_tokens = rows;
    RecordingHooks hooks(wants, spec, &lm.Rope(T, layer), &b, lm.context());
    hooks.set_seq_len(T);
    HiddenStates x{.num_seqs = seqs, .seq_len = T, .hidden = H,
                   .data = testing_util::RandomVector(rows * H, 11 + layer)};
    ASSERT_TRUE(RunDecoderBlock(spec, lm.Rope(T, layer), b, &x, &hooks, 1 << 20, lm.context()).ok());
    // The attention parent on the captured input: o_proj of the attention the block computed.
    QuantConfig qc;
    DecoderBlockView view(&b, &lm, &hooks.stats(), &qc, DType::kBF16);
    std::vector<float> out;
    std::vector<LinearWeight*> balance = {&b.q_proj, &b.k_proj, &b.v_proj};
    ASSERT_TRUE(view.ParentForward(balance, {nullptr, nullptr, nullptr}, &out).ok());
    const std::vector<float>& attn = hooks.inputs.at(b.o_proj.name);
    ASSERT_EQ(attn.size(), static_cast<size_t>(rows * spec.q_size()));
    std::vector<float> ref(rows * H);
    LinearForward(attn.data(), rows, spec.q_size(), b.o_proj.weight.data(), nullptr, H, ref.data(), lm.context());
    ASSERT_EQ(out.size(), ref.size());
    double err = 0, mag = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      err = std::max(err, double(std::fabs(out[i] - ref[i])));
      mag = std::max(mag, double(std::fabs(ref[i])));
    }
    EXPECT_LT(err, 1e-5 * mag + 1e-7);
    // The kv observer's k range: k_proj, then (rope layers) the interleaved rotation and the L2 norm.
    const std::vector<float>& n = hooks.inputs.at(b.k_proj.name);
    std::vector<float> k(rows * spec.kv_size());
    LinearForward(n.data(), rows, H, b.k_proj.weight.data(), nullptr, spec.kv_size(), k.data(), lm.context());
    float raw = 0;
    for (float v : k) raw = std::max(raw, std::fabs(v));
    if (spec.uses_rope(layer)) {
      ApplyRotary(k.data(), seqs, T, spec.num_kv_heads, lm.Rope(T, layer), lm.context(), spec.head_dim, true);
      const std::vector<float> ones(spec.head_dim, 1.0f);
      RmsNorm(k.data(), rows * spec.num_kv_heads, spec.head_dim, ones.data(), static_cast<float>(spec.rms_norm_eps),
              k.data(), lm.context());
    }
    float amax = 0;
    for (float v : k) amax = std::max(amax, std::fabs(v));
    EXPECT_NEAR(hooks.k_amax(), amax, 1e-5f * amax);
    if (layer == 0) {
      EXPECT_GT(std::fabs(amax - raw), 1e-3f * raw);  // the norm changed the range
    }
  }
}

}  // namespace
}  // namespace llmc
