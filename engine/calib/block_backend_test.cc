// The BlockBackend factory and the CPU backend against the CPU runtime run by hand (a synthetic Llama, no
// calibration data needed).
#include "engine/calib/block_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "tests/support/synthetic_model.h"
#include "tests/support/temp_dir.h"
#include "engine/format/quant_scheme.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

class BlockBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SyntheticLlamaShape shape;  // hidden 256, 2 layers
    ASSERT_TRUE(WriteSyntheticLlama(tmp_.path() + "/model", shape, DType::kBF16, 5, 1u << 30).ok());
    auto lm = CausalLm::Open(tmp_.path() + "/model");
    ASSERT_TRUE(lm.ok()) << lm.status();
    lm_ = std::move(*lm);
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(shape.vocab) - 1);
    for (auto [seqs, len] : {std::pair<int64_t, int64_t>{3, 16}, {2, 24}}) {
      std::vector<int32_t> ids(seqs * len);
      for (int32_t& v : ids) v = id(rng);
      auto x = lm_->Embed(ids, seqs, len);
      ASSERT_TRUE(x.ok());
      batches_.push_back(std::move(*x));
    }
  }

  // The Hessian of each input group and the channel maxima a pass over `batches` collects, by hand.
  std::map<std::string, GroupStats> RunByHand(const DecoderBlock& block, const Wants& wants,
                                              std::vector<HiddenStates> batches) {
    CalibHooks hooks(wants, lm_->spec(), &lm_->Rope(24), &block, lm_->context());
    for (HiddenStates& b : batches) {
      hooks.set_seq_len(b.seq_len);
      EXPECT_TRUE(lm_->RunBlock(block, &b, &hooks).ok());
    }
    return std::move(hooks.stats());
  }

  testing::TempDir tmp_;
  std::unique_ptr<CausalLm> lm_;
  std::vector<HiddenStates> batches_;
};

TEST_F(BlockBackendTest, UnknownDevicesAreAnError) {
  BlockBackendOptions o;
  o.device = "tpu";
  auto b = CreateBlockBackend(o, lm_.get(), batches_);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("device 'tpu': use cpu or cuda"));
}

// Without CUDA support in the build, or without a device, --device cuda says to use the CPU.
TEST_F(BlockBackendTest, CudaRunsOffTheHostOrSaysToUseTheCpu) {
  BlockBackendOptions o;
  o.device = "cuda";
  o.num_samples = 5;
  auto b = CreateBlockBackend(o, lm_.get(), batches_);
  if (b.ok()) {
    EXPECT_TRUE((*b)->runs_off_host());
  } else {
    EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("--device cpu"));
  }
}

// Calibrating block 1 after propagating through block 0 sees exactly what the runtime computes.
TEST_F(BlockBackendTest, CpuBackendCalibratesAndPropagatesAsTheRuntime) {
  auto b0 = lm_->LoadBlock(0);
  auto b1 = lm_->LoadBlock(1);
  ASSERT_TRUE(b0.ok() && b1.ok());
  BlockBackendOptions o;
  o.num_samples = 5;
  auto backend = CreateBlockBackend(o, lm_.get(), batches_);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_FALSE((*backend)->runs_off_host());
  Wants wants;
  wants.hessian = {"model.layers.0.self_attn.qkv", "model.layers.1.self_attn.qkv", "model.layers.1.mlp.down_proj"};
  wants.channel_max = {"model.layers.1.mlp.gate_up"};

  CalibHooks h0(wants, lm_->spec(), &lm_->Rope(24), b0->get(), lm_->context());
  ASSERT_TRUE((*backend)->Calibrate(**b0, wants, &h0).ok());
  auto want0 = RunByHand(**b0, wants, batches_);
  ASSERT_EQ(h0.stats().count("model.layers.0.self_attn.qkv"), 1u);
  EXPECT_EQ(h0.stats()["model.layers.0.self_attn.qkv"].hessian->Hessian(),
            want0["model.layers.0.self_attn.qkv"].hessian->Hessian());
  EXPECT_EQ(h0.stats()["model.layers.0.self_attn.qkv"].hessian->num_samples(), 5);

  ASSERT_TRUE((*backend)->Propagate(**b0).ok());
  std::vector<HiddenStates> next = batches_;
  for (HiddenStates& x : next) ASSERT_TRUE(lm_->RunBlock(**b0, &x).ok());
  CalibHooks h1(wants, lm_->spec(), &lm_->Rope(24), b1->get(), lm_->context());
  ASSERT_TRUE((*backend)->Calibrate(**b1, wants, &h1).ok());
  auto want1 = RunByHand(**b1, wants, next);
  for (const char* g : {"model.layers.1.self_attn.qkv", "model.layers.1.mlp.down_proj"})
    EXPECT_EQ(h1.stats()[g].hessian->Hessian(), want1[g].hessian->Hessian()) << g;
  EXPECT_EQ(h1.stats()["model.layers.1.mlp.gate_up"].channel_max, want1["model.layers.1.mlp.gate_up"].channel_max);
  EXPECT_EQ(h1.stats()["model.layers.1.mlp.gate_up"].tokens, 3 * 16 + 2 * 24);
}

TEST_F(BlockBackendTest, GptqNeedsAHessian) {
  BlockBackendOptions o;
  auto backend = CreateBlockBackend(o, lm_.get(), batches_);
  ASSERT_TRUE(backend.ok());
  std::vector<float> w(4 * 128, 0.5f);
  auto q = GroupQuantizer::Create("m", 4, 128, DType::kBF16, *PresetScheme("W8A16")->weights, "pack-quantized");
  ASSERT_TRUE(q.ok()) << q.status();
  const GroupStats none;  // collected nothing
  for (const GroupStats* st : {static_cast<const GroupStats*>(nullptr), &none}) {
    auto r = (*backend)->Gptq("m", w.data(), 4, 128, st, &*q, GptqOptions{});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("m: no Hessian"));
  }
}

}  // namespace
}  // namespace llmc
