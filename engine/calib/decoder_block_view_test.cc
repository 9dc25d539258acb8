// The per-family smoothing mappings and the norms a block of each family offers to SmoothQuant and AWQ.
#include "engine/calib/decoder_block_view.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/format/algorithms.h"
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

}  // namespace
}  // namespace llmc
