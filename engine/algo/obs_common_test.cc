// The pieces GPTQ, SparseGPT and GPTQ on the GPU share: obs_common.h and gptq_common.h.
#include "engine/algo/obs_common.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "engine/algo/gptq_common.h"
#include "engine/format/quant_scheme.h"
#include "engine/quant/group_quantizer.h"

namespace llmc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ObsCommonTest, DeadColumnsCountAsOneInTheDampening) {
  // H's diagonal 4, 0, 2, 0 (row-major 4x4, stride 5).
  std::vector<float> h(16, 0.5f);
  const float diag[4] = {4, 0, 2, 0};
  for (int i = 0; i < 4; ++i) h[i * 5] = diag[i];
  Dampening d = DeadColumnsAndDamping(h.data(), 5, 4, nullptr, 0.1);
  EXPECT_THAT(d.dead, ElementsAre(0, 1, 0, 1));
  EXPECT_EQ(d.num_dead, 2);
  EXPECT_DOUBLE_EQ(d.damp, 0.1 * (4 + 1 + 2 + 1) / 4.0);
  // In solve order: a permutation moves the flags, not the damping.
  const int64_t perm[4] = {2, 3, 0, 1};
  Dampening p = DeadColumnsAndDamping(diag, 1, 4, perm, 0.1);
  EXPECT_THAT(p.dead, ElementsAre(0, 1, 0, 1));
  const int64_t perm2[4] = {1, 0, 3, 2};
  EXPECT_THAT(DeadColumnsAndDamping(diag, 1, 4, perm2, 0.1).dead, ElementsAre(1, 0, 1, 0));
  EXPECT_DOUBLE_EQ(p.damp, d.damp);

  std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8};  // [2, 4]
  ZeroDeadColumns(d.dead, 2, 4, w.data());
  EXPECT_THAT(w, ElementsAre(1, 0, 3, 0, 5, 0, 7, 0));
}

TEST(ObsCommonTest, Checks) {
  const std::vector<float> w = {1, 2, 3, NAN, 5, 6};
  absl::Status s = CheckWeightFinite("m", w.data(), 2, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("m: the weight has a NaN or Inf at [1, 0]"));
  EXPECT_TRUE(CheckWeightFinite("m", w.data(), 1, 3).ok());
  EXPECT_THAT(std::string(HessianNotFiniteError("m", 7, 3).message()), HasSubstr("NaN or Inf at [2, 1]"));
  EXPECT_FALSE(CheckBlockSize("m", 0).ok());
  EXPECT_TRUE(CheckBlockSize("m", 1).ok());
  EXPECT_FALSE(CheckDampeningFrac("m", -0.01).ok());
  EXPECT_FALSE(CheckDampeningFrac("m", INFINITY).ok());
  EXPECT_TRUE(CheckDampeningFrac("m", 0.0).ok());
}

TEST(ObsCommonTest, ThreadsAndLoss) {
  EXPECT_EQ(ResolveThreads(3), 3);
  EXPECT_GE(ResolveThreads(0), 1);
  EXPECT_EQ(ColumnWalkThreads(8, 100), 1);  // one thread per 64 rows at most
  EXPECT_EQ(ColumnWalkThreads(8, 200), 3);
  EXPECT_EQ(ColumnWalkThreads(2, 6400), 2);
  EXPECT_DOUBLE_EQ(HalfTotalLoss({1.0, 2.0, 3.5}), 3.25);
  EXPECT_THAT(FactorFailureWarning("m", "potrf failed", 0.01, "doing X"),
              HasSubstr("m: potrf failed (dampening_frac 0.01); doing X for this module."));
}

TEST(ObsCommonTest, ColumnBlocksCoverEveryColumnInOrderAndStopAtAnError) {
  std::vector<std::pair<int64_t, int64_t>> seen;
  auto record = [&](int64_t i1, int64_t n) {
    seen.emplace_back(i1, n);
    return absl::OkStatus();
  };
  ASSERT_TRUE(ForEachColumnBlock(10, 4, record).ok());
  EXPECT_THAT(seen, ElementsAre(std::make_pair(0, 4), std::make_pair(4, 4), std::make_pair(8, 2)));
  seen.clear();
  absl::Status s = ForEachColumnBlock(10, 3, [&](int64_t i1, int64_t n) {
    seen.emplace_back(i1, n);
    return i1 == 3 ? absl::InternalError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(seen.size(), 2u);
}

// ---- gptq_common.h ----

GroupQuantizer Quantizer(int64_t rows, int64_t cols, int group) {
  QuantArgs a = *PresetScheme("W4A16")->weights;
  a.group_size = group;
  return *GroupQuantizer::Create("m", rows, cols, DType::kBF16, a, "pack-quantized");
}

TEST(GptqCommonTest, ColumnOrderFollowsTheHessianDiagonal) {
  GroupQuantizer q = Quantizer(2, 6, 2);
  const float diag[6] = {1, 5, 0, 5, 3, 0};
  GptqOptions o;
  o.actorder = "group";
  auto plan = PlanGptqColumns("m", o, q.params(), diag, 1, 6);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->strategy, Strategy::kGroup);
  EXPECT_TRUE(plan->grouped);
  EXPECT_EQ(plan->order, ActOrder::kGroup);
  EXPECT_THAT(plan->perm, ElementsAre(1, 3, 4, 0, 2, 5));  // descending, ties in column order
  EXPECT_EQ(plan->source_column(2), 4);
  // "group": consecutive solve-order columns share a group; "weight": each column keeps its original group.
  EXPECT_THAT(plan->ColumnGroups(6, 2), ElementsAre(0, 0, 1, 1, 2, 2));
  o.actorder = "weight";
  auto w = PlanGptqColumns("m", o, q.params(), diag, 1, 6);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->order, ActOrder::kWeight);
  EXPECT_THAT(w->ColumnGroups(6, 2), ElementsAre(0, 1, 2, 0, 1, 2));
  // Per-channel scales (one group per row) never permute.
  GroupQuantizer channel = Quantizer(2, 6, 6);
  auto c = PlanGptqColumns("m", o, channel.params(), diag, 1, 6);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->order, ActOrder::kNone);
  EXPECT_TRUE(c->perm.empty());
  EXPECT_THAT(c->ColumnGroups(6, 6), ElementsAre(0, 0, 0, 0, 0, 0));
  o.actorder = "sideways";
  EXPECT_FALSE(PlanGptqColumns("m", o, q.params(), diag, 1, 6).ok());
}

TEST(GptqCommonTest, ValidationAndTheZeroRule) {
  GroupQuantizer q = Quantizer(2, 4, 2);
  const std::vector<float> w(8, 1.0f), h(16, 1.0f);
  GptqOptions o;
  EXPECT_TRUE(ValidateGptqArgs("m", w.data(), 2, 4, h.data(), 1, &q, o).ok());
  EXPECT_THAT(std::string(ValidateGptqArgs("m", w.data(), 2, 4, h.data(), 1, nullptr, o).message()),
              HasSubstr("needs a quantizer"));
  EXPECT_THAT(std::string(ValidateGptqArgs("m", w.data(), 4, 2, h.data(), 1, &q, o).message()),
              HasSubstr("does not match the quantizer's [2, 4]"));
  EXPECT_EQ(ValidateGptqArgs("m", w.data(), 2, 4, h.data(), 0, &q, o).code(), absl::StatusCode::kFailedPrecondition);
  const std::vector<uint8_t> mask(7, 1);
  o.keep_mask = &mask;
  EXPECT_THAT(std::string(ValidateGptqArgs("m", w.data(), 2, 4, h.data(), 1, &q, o).message()),
              HasSubstr("keep_mask has 7 entries"));
  const float diag[3] = {1, INFINITY, 1};
  EXPECT_THAT(std::string(CheckHessianDiagonal("m", diag, 1, 3).message()), HasSubstr("diagonal at column 1"));
  EXPECT_FALSE(GptqPreservesZeros(4, 100));
  EXPECT_TRUE(GptqPreservesZeros(5, 100));
}

}  // namespace
}  // namespace llmc
