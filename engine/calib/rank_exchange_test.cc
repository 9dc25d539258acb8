// The exchanges of the sharded pipeline on Gloo ranks that are threads of this process: reduced statistics equal
// those of one rank holding every sample, owners are balanced and the same on every rank, module results and
// blocks arrive intact, and a failure on one rank reaches all of them.
#include "engine/calib/rank_exchange.h"

#include <gtest/gtest.h>

#include <functional>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "engine/dist/gloo_communicator.h"

namespace llmc {
namespace {

void RunRanks(int size, const std::function<void(int, Communicator*)>& body) {
  auto store = NewMemoryStore();
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      GlooOptions o;
      o.rank = r;
      o.size = size;
      o.timeout = absl::Seconds(20);
      auto comm = GlooCommunicator::Create(o, store.get());
      ASSERT_TRUE(comm.ok()) << comm.status();
      body(r, comm->get());
    });
  for (auto& t : threads) t.join();
}

std::vector<float> Rows(int seed, int64_t tokens, int64_t cols) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n;
  std::vector<float> x(tokens * cols);
  for (float& v : x) v = n(g);
  return x;
}

// The BlockBackend calls ReduceCalibStats makes only for device statistics, which these have none of.
class NoDeviceBackend final : public BlockBackend {
 public:
  absl::Status Calibrate(const DecoderBlock&, const Wants&, CalibHooks*) override { return absl::OkStatus(); }
  absl::Status Propagate(const DecoderBlock&) override { return absl::OkStatus(); }
};

TEST(RankExchangeTest, ReducedStatisticsEqualOneRankWithEverySample) {
  constexpr int kRanks = 3;
  constexpr int64_t kCols = 24, kTokens = 40;
  // One rank with every rank's rows.
  HessianAccumulator all(kCols);
  RowNormAccumulator all_rows(kCols);
  for (int r = 0; r < kRanks; ++r) {
    auto x = Rows(r, kTokens, kCols);
    ASSERT_TRUE(all.Add(x.data(), kTokens, 2).ok());
    ASSERT_TRUE(all_rows.Add(x.data(), kTokens, 2).ok());
  }
  std::mutex mu;
  std::vector<std::vector<float>> hessians(kRanks);
  RunRanks(kRanks, [&](int r, Communicator* comm) {
    Wants w;
    ModelSpec spec;
    CalibHooks hooks(w, spec, nullptr, nullptr, nullptr);
    GroupStats& s = hooks.stats()["g"];
    auto x = Rows(r, kTokens, kCols);
    s.hessian = std::make_unique<HessianAccumulator>(kCols);
    s.row_norm = std::make_unique<RowNormAccumulator>(kCols);
    ASSERT_TRUE(s.hessian->Add(x.data(), kTokens, 2).ok());
    ASSERT_TRUE(s.row_norm->Add(x.data(), kTokens, 2).ok());
    s.channel_max.assign(kCols, static_cast<float>(r));
    s.channel_abs_sum.assign(kCols, 1.0);
    s.min = -1.0f - r;
    s.max = 2.0f * r;
    s.tokens = kTokens;
    s.nonfinite = r == 1;
    hooks.set_kv_amax(static_cast<float>(r), 10.0f - r);
    NoDeviceBackend backend;
    ASSERT_TRUE(ReduceCalibStats(comm, &backend, &hooks, false).ok());
    EXPECT_EQ(s.hessian->num_samples(), all.num_samples());
    EXPECT_EQ(s.hessian->num_tokens(), all.num_tokens());
    EXPECT_EQ(s.row_norm->num_samples(), all_rows.num_samples());
    for (int64_t c = 0; c < kCols; ++c) {
      EXPECT_NEAR(s.row_norm->SumSquares()[c], all_rows.SumSquares()[c], 1e-9 * all_rows.SumSquares()[c]);
      EXPECT_EQ(s.channel_max[c], kRanks - 1.0f);
      EXPECT_EQ(s.channel_abs_sum[c], kRanks);
    }
    EXPECT_EQ(s.min, -static_cast<float>(kRanks));
    EXPECT_EQ(s.max, 2.0f * (kRanks - 1));
    EXPECT_EQ(s.tokens, kRanks * kTokens);
    EXPECT_TRUE(s.nonfinite);  // one rank saw a NaN: all of them stop
    EXPECT_EQ(hooks.k_amax(), kRanks - 1.0f);
    EXPECT_EQ(hooks.v_amax(), 10.0f);
    std::lock_guard<std::mutex> l(mu);
    hessians[r] = s.hessian->Hessian();
  });
  const std::vector<float> want = all.Hessian();
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(hessians[r], hessians[0]) << "every rank holds the same bits";
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(hessians[r][i], want[i], 1e-5f * (1 + std::fabs(want[i])));
  }
}

TEST(RankExchangeTest, OwnersAreBalancedAndCoverEveryModule) {
  // A Llama block's seven Linears (hidden 4096, MLP 14336, GQA 32/8), GPTQ costs.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {1024, 4096}, {1024, 4096}, {4096, 4096},
                                                           {14336, 4096}, {14336, 4096}, {4096, 14336}};
  std::vector<double> costs;
  for (auto [r, c] : shapes) costs.push_back(SolveCost(r, c, true));
  EXPECT_EQ(AssignOwners(costs, 1), std::vector<int>(7, 0));
  for (int ranks : {2, 3, 4, 8}) {
    std::vector<int> owner = AssignOwners(costs, ranks);
    ASSERT_EQ(owner.size(), costs.size());
    std::vector<double> load(ranks, 0.0);
    for (size_t i = 0; i < costs.size(); ++i) {
      ASSERT_GE(owner[i], 0);
      ASSERT_LT(owner[i], ranks);
      load[owner[i]] += costs[i];
    }
    // Greedy by cost: no rank above the ideal share plus the largest module.
    const double total = std::accumulate(costs.begin(), costs.end(), 0.0);
    const double largest = *std::max_element(costs.begin(), costs.end());
    for (double l : load) EXPECT_LE(l, total / ranks + largest);
    EXPECT_EQ(owner, AssignOwners(costs, ranks)) << "deterministic";
  }
  // The largest module (down_proj, cols^3) goes alone to a rank when there are two.
  std::vector<int> two = AssignOwners(costs, 2);
  EXPECT_EQ(std::count(two.begin(), two.end(), two[6]), 1);
}

TEST(RankExchangeTest, ModuleResultsBlocksAndFailuresReachEveryRank) {
  RunRanks(3, [](int r, Communicator* comm) {
    ModuleResult m;
    if (r == 2) {
      m.weight = {1.0f, -2.5f, 3.0f};
      m.mask = {1, 0, 1};
      m.info = {{"name", "model.layers.0.mlp.down_proj"}, {"gptq_loss", 0.25}};
      m.warnings = {"a warning"};
      m.tensors = {{"model.layers.0.mlp.down_proj.weight_packed", {1, 2, 3, 4}},
                   {"model.layers.0.mlp.down_proj.weight_scale", {}}};
    }
    ASSERT_TRUE(BroadcastModuleResult(comm, &m, 2).ok());
    EXPECT_EQ(m.weight, (std::vector<float>{1.0f, -2.5f, 3.0f}));
    EXPECT_EQ(m.mask, (std::vector<uint8_t>{1, 0, 1}));
    EXPECT_EQ(m.info["gptq_loss"], 0.25);
    EXPECT_EQ(m.warnings, std::vector<std::string>{"a warning"});
    ASSERT_EQ(m.tensors.size(), 2u);
    EXPECT_EQ(m.tensors[0].second, (std::vector<uint8_t>{1, 2, 3, 4}));
    EXPECT_TRUE(m.tensors[1].second.empty());

    DecoderBlock b;
    b.q_proj.weight.assign(6, static_cast<float>(r));
    b.input_norm.assign(4, static_cast<float>(r) + 0.5f);
    ASSERT_TRUE(SyncBlock(comm, &b, 1).ok());
    EXPECT_EQ(b.q_proj.weight, std::vector<float>(6, 1.0f));
    EXPECT_EQ(b.input_norm, std::vector<float>(4, 1.5f));

    EXPECT_TRUE(AgreeOnStatus(comm, absl::OkStatus()).ok());
    absl::Status s = AgreeOnStatus(comm, r == 1 ? absl::InvalidArgumentError("bad module") : absl::OkStatus());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    if (r != 1) {
      EXPECT_EQ(s.message(), "rank 1: bad module");
    }

    auto all = AllGatherJson(comm, {{"rank", r}});
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ((*all)[i]["rank"], i);
  });
}

}  // namespace
}  // namespace llmc
