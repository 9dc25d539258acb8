// What the mixture-of-experts calibration tests share: the tiny MoE checkpoints of engine/model/testdata copied
// with a character-level tokenizer, a calibration/evaluation text, and `llmc eval`'s perplexity of a directory.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/model/causal_lm.h"
#include "engine/model/model_test_util.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/support/char_tokenizer.h"
#include "tests/support/temp_dir.h"

namespace llmc::moe_test {

inline constexpr char kText[] =
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly "
    "quick "
    "daft zebras jump! Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly. Jackdaws "
    "love "
    "my big sphinx of quartz. Mixture of experts models route every token to a few experts of many. ";

class MoeTest : public ::testing::Test {
 protected:
  // The tiny model `name` with the character tokenizer, in tmp/name.
  std::string Model(const std::string& name) {
    const std::string dir = tmp_ / name;
    std::filesystem::create_directories(dir);
    for (const char* f : {"config.json", "model.safetensors"})
      std::filesystem::copy_file(testing_util::TestDataDir() + "/" + name + "/" + f, dir + "/" + f);
    testing::WriteCharTokenizer(dir);
    return dir;
  }

  static nlohmann::json Report(const std::string& out) {
    std::ifstream f(out + "/compression_report.json");
    return nlohmann::json::parse(f);
  }

  // Perplexity of the text under `dir`, as `llmc eval` computes it (activations quantized as the checkpoint says).
  double Perplexity(const std::string& dir) {
    auto lm = CausalLm::Open(dir, {.threads = 2});
    EXPECT_TRUE(lm.ok()) << lm.status();
    if (!lm.ok()) return NAN;
    auto tok = Tokenizer::FromModelDir(dir);
    EXPECT_TRUE(tok.ok()) << tok.status();
    auto ids = (*tok)->Encode(std::string(kText) + kText, false);
    EXPECT_TRUE(ids.ok());
    PerplexityOptions po;
    po.seq_len = 32;
    auto r = ComputePerplexity(**lm, *ids, po);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->perplexity : NAN;
  }

  testing::TempDir tmp_;
};

}  // namespace llmc::moe_test
