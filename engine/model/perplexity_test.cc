// The `llmc eval` perplexity protocol: windows, counts, errors, and the fixture against Hugging Face.
#include "engine/model/perplexity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "engine/io/model_dir.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/model_test_util.h"

#ifdef LLMC_HAVE_TOKENIZER
#include "engine/tokenizer/tokenizer.h"
#endif

namespace llmc {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
using testing_util::FixtureDir;
using testing_util::ReadJson;
using testing_util::SharedDir;
using testing_util::TestDataDir;

std::vector<int32_t> Pseudo(int64_t n, int32_t vocab) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919 + i / 3) % vocab);
  return ids;
}

TEST(PerplexityTest, ProtocolWindowsAndCounts) {
  auto lm = CausalLm::Open(TestDataDir() + "/tiny-qwen3", {.threads = 2});
  ASSERT_TRUE(lm.ok()) << lm.status();
  const int64_t T = 16;
  auto ids = Pseudo(5 * T + 7, 128);  // 5 whole windows and a partial one, which is dropped
  PerplexityOptions o;
  o.seq_len = T;
  o.max_windows = 200;
  auto r = ComputePerplexity(**lm, ids, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->windows, 5);
  EXPECT_EQ(r->tokens, 5 * T);
  EXPECT_EQ(r->predicted_tokens, 5 * (T - 1));
  ASSERT_EQ(r->window_nll_sum.size(), 5u);
  // Each window is an independent sequence starting at position 0: its NLL is that of a forward of it alone.
  double total = 0;
  for (int64_t w = 0; w < 5; ++w) {
    std::vector<int32_t> win(ids.begin() + w * T, ids.begin() + (w + 1) * T);
    auto logits = (*lm)->Forward(win, 1, T);
    ASSERT_TRUE(logits.ok());
    double nll = 0;
    for (int64_t t = 0; t + 1 < T; ++t) nll += TokenNll(logits->data() + t * 128, 128, win[t + 1]);
    EXPECT_NEAR(r->window_nll_sum[w], nll, 1e-4 * nll) << w;
    total += nll;
  }
  EXPECT_NEAR(r->perplexity, std::exp(total / (5 * (T - 1))), 1e-4 * r->perplexity);
  EXPECT_NEAR(std::log(r->perplexity), r->mean_nll, 1e-12);
  // max_windows takes the first ones; windows_per_pass changes nothing.
  o.max_windows = 2;
  o.windows_per_pass = 1;
  auto two = ComputePerplexity(**lm, ids, o);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->windows, 2);
  EXPECT_NEAR(two->window_nll_sum[0], r->window_nll_sum[0], 1e-6 * r->window_nll_sum[0]);
  EXPECT_NEAR(two->window_nll_sum[1], r->window_nll_sum[1], 1e-6 * r->window_nll_sum[1]);
}

TEST(PerplexityTest, NormalizeNewlinesLikePythonTextMode) {
  EXPECT_EQ(NormalizeNewlines("a\r\nb\rc\n\r\r\nd\r"), "a\nb\nc\n\n\nd\n");
  EXPECT_EQ(NormalizeNewlines(""), "");
  EXPECT_EQ(NormalizeNewlines("no breaks"), "no breaks");
}

TEST(PerplexityTest, RejectsBadArguments) {
  auto lm = CausalLm::Open(TestDataDir() + "/tiny-qwen3", {.threads = 1});
  ASSERT_TRUE(lm.ok());
  auto ids = Pseudo(40, 128);
  PerplexityOptions o;
  o.seq_len = 64;
  auto short_text = ComputePerplexity(**lm, ids, o);
  EXPECT_THAT(std::string(short_text.status().message()),
              HasSubstr("the text has 40 tokens, fewer than one window of 64"));
  o.seq_len = 1;
  EXPECT_THAT(std::string(ComputePerplexity(**lm, ids, o).status().message()),
              HasSubstr("seq_len 1 is too short"));
  o.seq_len = 8;
  o.max_windows = 0;
  EXPECT_FALSE(ComputePerplexity(**lm, ids, o).ok());
  o.max_windows = 1;
  ids[3] = -1;
  EXPECT_THAT(std::string(ComputePerplexity(**lm, ids, o).status().message()), HasSubstr("token id -1"));
}

// The first 4 windows of ../shared/data/eval.txt and wikitext2-test.txt (ids from HF's tokenizer, in
// testdata) against HF's per-window NLL: fp32 to ~1e-5 relative (same math, other summation order), and HF
// bf16 (the arithmetic of the fixture report's numbers) within 0.5% of perplexity.
class FixtureTextTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTextTest, FirstWindowsMatchTransformers) {
  std::string dir = FixtureDir();
  if (dir.empty())
    GTEST_SKIP() << "../shared/models/llmc-fixture-llama not found (set LLMC_SHARED_DIR to run)";
  const std::string text = GetParam();
  json ref = ReadJson(TestDataDir() + "/fixture_reference.json");
  std::vector<int32_t> ids = ref[text + "_first_windows_ids"].get<std::vector<int32_t>>();
  auto lm = CausalLm::Open(dir);
  ASSERT_TRUE(lm.ok()) << lm.status();
  PerplexityOptions o;
  o.seq_len = 512;
  o.max_windows = 4;
  auto r = ComputePerplexity(**lm, ids, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->windows, 4);
  double fp32 = 0, bf16 = 0;
  for (int w = 0; w < 4; ++w) {
    double want = ref[text + "_first_windows_nll_sum_fp32"][w].get<double>();
    EXPECT_NEAR(r->window_nll_sum[w], want, 2e-5 * want) << w;
    fp32 += want;
    bf16 += ref[text + "_first_windows_nll_sum_bf16"][w].get<double>();
  }
  const double ppl_fp32 = std::exp(fp32 / (4 * 511)), ppl_bf16 = std::exp(bf16 / (4 * 511));
  EXPECT_NEAR(r->perplexity, ppl_fp32, 1e-4 * ppl_fp32);
  EXPECT_NEAR(r->perplexity, ppl_bf16, 5e-3 * ppl_bf16);
  std::printf("fixture %s first 4 windows: llmc %.5f, HF fp32 %.5f, HF bf16 %.5f; %.0f tokens/s\n",
              text.c_str(), r->perplexity, ppl_fp32, ppl_bf16, r->tokens / r->seconds);
}

#ifdef LLMC_HAVE_TOKENIZER
// The same through the tokenizer, with the text read as `llmc eval` reads it: tokenized whole, without
// special tokens, after NormalizeNewlines, the file starts with the ids HF gave.
TEST_P(FixtureTextTest, TokenizedTextMatchesTransformers) {
  std::string dir = FixtureDir();
  if (dir.empty())
    GTEST_SKIP() << "../shared/models/llmc-fixture-llama not found (set LLMC_SHARED_DIR to run)";
  const std::string text = GetParam();
  auto tok = Tokenizer::FromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto raw =
      ReadTextFile(SharedDir() + (text == "eval" ? "/data/eval.txt" : "/data/wikitext2-test.txt"), 64u << 20);
  ASSERT_TRUE(raw.ok()) << raw.status();
  auto ids = (*tok)->Encode(NormalizeNewlines(*raw), false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  json ref = ReadJson(TestDataDir() + "/fixture_reference.json");
  std::vector<int32_t> want = ref[text + "_first_windows_ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids->size(), want.size());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), ids->begin())) << "tokenizer ids differ from HF's";
  auto lm = CausalLm::Open(dir);
  ASSERT_TRUE(lm.ok());
  PerplexityOptions o;
  o.seq_len = 512;
  o.max_windows = 4;
  auto r = ComputePerplexity(**lm, *ids, o);
  ASSERT_TRUE(r.ok()) << r.status();
  double fp32 = 0;
  for (int w = 0; w < 4; ++w) fp32 += ref[text + "_first_windows_nll_sum_fp32"][w].get<double>();
  EXPECT_NEAR(r->perplexity, std::exp(fp32 / (4 * 511)), 1e-4 * r->perplexity);
}
#endif

INSTANTIATE_TEST_SUITE_P(Texts, FixtureTextTest, ::testing::Values("eval", "wikitext"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace llmc
