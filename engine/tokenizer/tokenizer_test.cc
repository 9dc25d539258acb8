#include "tests/support/temp_dir.h"
#include "engine/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/util.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/regex.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ../shared, from LLMC_SHARED_DIR or beside the source tree; empty when absent.
std::string SharedDir() {
  if (const char* env = std::getenv("LLMC_SHARED_DIR"); env != nullptr && *env != '\0') return env;
  const std::string dir = std::string(LLMC_SOURCE_DIR) + "/../shared";
  return fs::exists(dir) ? dir : "";
}

using ::llmc::testing::ReadAll;

using ::llmc::testing::TempDir;

// The pre-tokenizer regex of Llama-3 and Qwen2 tokenizer.json files.
constexpr char kLlama3PatternForTests[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------------------------------------------
// The fixture model's byte-level BPE tokenizer against the ids Hugging Face tokenizers produced.

class FixtureTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shared_ = SharedDir();
    if (shared_.empty()) GTEST_SKIP() << "shared data not found: set LLMC_SHARED_DIR to the shared/ folder";
    model_dir_ = shared_ + "/models/llmc-fixture-llama";
    auto t = Tokenizer::FromModelDir(model_dir_);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }
  std::string shared_, model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(FixtureTokenizerTest, MatchesHuggingFaceGoldens) {
  const json goldens = json::parse(ReadAll(model_dir_ + "/goldens.json"));
  ASSERT_TRUE(goldens.contains("tokenizer"));
  ASSERT_FALSE(goldens["tokenizer"].empty());
  for (const json& g : goldens["tokenizer"]) {
    const std::string text = g["text"].get<std::string>();
    const std::vector<int32_t> expected = g["ids"].get<std::vector<int32_t>>();
    auto ids = tokenizer_->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected) << "text: " << text;
    // Without special tokens: the same ids less the BOS.
    auto plain = tokenizer_->Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(*plain, std::vector<int32_t>(expected.begin() + 1, expected.end()));
    auto decoded = tokenizer_->Decode(*ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text);
  }
}

TEST_F(FixtureTokenizerTest, VocabAndSpecialIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 8192);
  EXPECT_EQ(tokenizer_->bos_id(), 0);
  EXPECT_EQ(tokenizer_->eos_id(), 1);
  EXPECT_EQ(tokenizer_->TokenToId("<|pad|>"), 2);
  EXPECT_EQ(tokenizer_->IdToToken(0), "<|begin_of_text|>");
}

TEST_F(FixtureTokenizerTest, SpecialTokensInTextAndDecoding) {
  auto ids = tokenizer_->Encode("<|begin_of_text|>Hi<|end_of_text|>", false);
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 3u);
  EXPECT_EQ(ids->front(), 0);
  EXPECT_EQ(ids->back(), 1);
  auto kept = tokenizer_->Decode(*ids, /*skip_special_tokens=*/false);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, "<|begin_of_text|>Hi<|end_of_text|>");
  auto skipped = tokenizer_->Decode(*ids, /*skip_special_tokens=*/true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(*skipped, "Hi");
}

TEST_F(FixtureTokenizerTest, EdgeInputs) {
  auto empty = tokenizer_->Encode("", true);
  ASSERT_TRUE(empty.ok());
  EXPECT_THAT(*empty, ElementsAre(0));
  auto none = tokenizer_->Encode("", false);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  auto bad = tokenizer_->Encode("abc\xC3(", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("UTF-8"));

  auto out_of_range = tokenizer_->Decode({5, 99999}, false);
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_THAT(out_of_range.status().message(), HasSubstr("99999"));

  // Every byte value, long whitespace runs and mixed scripts survive the round trip.
  std::string tricky = "\t\t  \r\n\r\n   x\u00a0y\u2003z \u0085 end  ";
  tricky += std::string(5000, ' ') + "tail" + std::string(3000, '\n');
  for (const std::string& text :
       {tricky, std::string("I'm 'S' don'T 1234567 \xF0\x9F\x98\x80\xF0\x9F\x98\x80!")}) {
    auto ids = tokenizer_->Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = tokenizer_->Decode(*ids, false);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text);
  }
}

TEST_F(FixtureTokenizerTest, RoundTripsSharedTextsAndIsFast) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(shared_ + "/data")) {
    if (entry.path().extension() != ".txt") continue;
    ++files;
    const std::string text = ReadAll(entry.path().string());
    const double t0 = NowSeconds();
    auto ids = tokenizer_->Encode(text, /*add_special_tokens=*/true);
    const double secs = NowSeconds() - t0;
    ASSERT_TRUE(ids.ok()) << entry.path() << ": " << ids.status();
    std::printf("[ perf     ] %s: %zu bytes -> %zu tokens in %.3f s (%.2f M bytes/s)\n",
                entry.path().filename().c_str(), text.size(), ids->size(), secs, text.size() / secs / 1e6);
    EXPECT_EQ(ids->front(), 0);
    EXPECT_LT(ids->size(), text.size() / 2) << "a trained BPE should need well under one token per two bytes";
    auto back = tokenizer_->Decode(*ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(*back == text) << entry.path() << ": decoded text differs from the original";
    EXPECT_LT(secs, 30.0) << "tokenizing " << entry.path() << " is far too slow";
  }
  EXPECT_GT(files, 0) << "no *.txt files in " << shared_ << "/data";
}

TEST_F(FixtureTokenizerTest, ConcurrentEncodesAgree) {
  std::vector<std::string> texts;
  for (int i = 0; i < 8; ++i)
    texts.push_back(absl::StrFormat("Thread text %d: the quick brown fox %d jumps over %d lazy dogs.\n", i,
                                    i * 7, i * 13));
  std::vector<std::vector<int32_t>> expected;
  for (const auto& t : texts) expected.push_back(*tokenizer_->Encode(t, true));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int rep = 0; rep < 200; ++rep) {
        const size_t k = (rep + w) % texts.size();
        auto ids = tokenizer_->Encode(texts[k], true);
        if (!ids.ok() || *ids != expected[k]) ++mismatches[w];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int w = 0; w < 4; ++w) EXPECT_EQ(mismatches[w], 0) << "worker " << w;
}

// ---------------------------------------------------------------------------------------------------------------
// A SentencePiece-style (Llama-2 / Mistral) tokenizer.json built here, with ids worked out by hand.
//
// ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the pieces below from 259 on.
const std::vector<std::string> kPieces = {"▁",  "h",   "e",   "l",      "o",  "w",  "r",    "d",  "he",
                                          "ll", "▁he", "llo", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"};
int32_t Id(const std::string& piece) {
  for (size_t i = 0; i < kPieces.size(); ++i)
    if (kPieces[i] == piece) return static_cast<int32_t>(259 + i);
  ADD_FAILURE() << "no piece " << piece;
  return -1;
}
int32_t ByteId(int b) { return 3 + b; }

struct SpOptions {
  bool byte_fallback = true;
  bool fuse_unk = true;
  // "legacy": Prepend + Replace normalizer; otherwise a Metaspace pre-tokenizer with this prepend_scheme.
  std::string metaspace_scheme;
  bool metaspace_split = false;
  bool pair_merges = false;  // write merges as ["a", "b"] pairs instead of "a b"
  json extra_added = json::array();
};

json SentencePieceJson(const SpOptions& o) {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) vocab[absl::StrFormat("<0x%02X>", b)] = ByteId(b);
  for (size_t i = 0; i < kPieces.size(); ++i) vocab[kPieces[i]] = 259 + static_cast<int>(i);
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"▁", "he"},  {"ll", "o"}, {"▁he", "llo"},
      {"▁", "w"}, {"o", "r"}, {"▁w", "or"}, {"l", "d"},  {"▁wor", "ld"}};
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    if (o.pair_merges) {
      merge_list.push_back(json::array({a, b}));
    } else {
      merge_list.push_back(a + " " + b);
    }
  }
  auto special = [](int id, const char* content) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  json added = json::array({special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")});
  for (const auto& e : o.extra_added) added.push_back(e);

  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  if (o.metaspace_scheme.empty()) {
    j["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers",
         json::array({{{"type", "Prepend"}, {"prepend", "▁"}},
                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}})}};
    j["pre_tokenizer"] = nullptr;
  } else {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"},
                          {"replacement", "▁"},
                          {"prepend_scheme", o.metaspace_scheme},
                          {"split", o.metaspace_split}};
  }
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array()},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", json::array({1})}, {"tokens", json::array({"<s>"})}}}}}};
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                                {{"type", "ByteFallback"}},
                                {{"type", "Fuse"}},
                                {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", o.fuse_unk},
                {"byte_fallback", o.byte_fallback},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merge_list}};
  return j;
}

std::unique_ptr<Tokenizer> SpTokenizer(const SpOptions& o) {
  auto t = Tokenizer::FromJsonText(SentencePieceJson(o).dump(), "sp-test/tokenizer.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer& t, const std::string& text, bool special = true) {
  auto ids = t.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(SentencePieceTokenizerTest, MergesByRank) {
  for (bool pairs : {false, true}) {
    SpOptions o;
    o.pair_merges = pairs;
    auto t = SpTokenizer(o);
    ASSERT_NE(t, nullptr);
    // "▁hello▁world": h+e, l+l, ▁+he, ll+o, ▁he+llo, ▁+w, o+r, ▁w+or, l+d, ▁wor+ld.
    EXPECT_THAT(Enc(*t, "hello world"), ElementsAre(1, Id("▁hello"), Id("▁world")));
    EXPECT_THAT(Enc(*t, "hello world", false), ElementsAre(Id("▁hello"), Id("▁world")));
    // "▁hell": h+e, l+l, ▁+he; "ll" then has no merge with the end.
    EXPECT_THAT(Enc(*t, "hell", false), ElementsAre(Id("▁he"), Id("ll")));
    // Two spaces: "▁▁world" -> ▁, then ▁+w ... ▁world.
    EXPECT_THAT(Enc(*t, " world", false), ElementsAre(Id("▁"), Id("▁world")));
    EXPECT_EQ(t->vocab_size(), 259 + static_cast<int64_t>(kPieces.size()));
    EXPECT_EQ(t->bos_id(), 1);
    EXPECT_EQ(t->eos_id(), std::nullopt);
  }
}

TEST(SentencePieceTokenizerTest, ByteFallbackAndDecoding) {
  auto t = SpTokenizer(SpOptions{});
  ASSERT_NE(t, nullptr);
  // "▁hi▁é": 'i' and 'é' are not pieces, so they fall back to their UTF-8 bytes.
  const std::vector<int32_t> ids = Enc(*t, "hi é", false);
  EXPECT_THAT(ids, ElementsAre(Id("▁"), Id("h"), ByteId(0x69), Id("▁"), ByteId(0xC3), ByteId(0xA9)));
  auto text = t->Decode(ids, true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "hi é");  // Replace ▁, ByteFallback, Fuse, then Strip one leading space

  // A lone continuation byte is not UTF-8: ByteFallback writes one U+FFFD per byte.
  auto broken = t->Decode({Id("▁w"), ByteId(0xA9), ByteId(0xA9)}, true);
  ASSERT_TRUE(broken.ok());
  EXPECT_EQ(*broken, "w\uFFFD\uFFFD");

  // Special tokens: kept or skipped; the leading space is stripped only from the first token.
  auto kept = t->Decode({1, Id("▁hello"), Id("▁world"), 2}, false);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, "<s> hello world</s>");
  auto skipped = t->Decode({1, Id("▁hello"), Id("▁world"), 2}, true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(*skipped, "hello world");
}

TEST(SentencePieceTokenizerTest, UnknownTokensFuseOrNot) {
  SpOptions fused;
  fused.byte_fallback = false;
  auto t = SpTokenizer(fused);
  ASSERT_NE(t, nullptr);
  // "▁hxyz": x, y, z are unknown: one fused <unk>.
  EXPECT_THAT(Enc(*t, "hxyz", false), ElementsAre(Id("▁"), Id("h"), 0));
  // An unknown run between known pieces: "▁hxe" -> ▁, h, <unk>, e.
  EXPECT_THAT(Enc(*t, "hxe", false), ElementsAre(Id("▁"), Id("h"), 0, Id("e")));

  SpOptions unfused = fused;
  unfused.fuse_unk = false;
  auto u = SpTokenizer(unfused);
  ASSERT_NE(u, nullptr);
  EXPECT_THAT(Enc(*u, "hxyz", false), ElementsAre(Id("▁"), Id("h"), 0, 0, 0));
}

TEST(SentencePieceTokenizerTest, SpecialTokensSplitBeforeNormalizing) {
  auto t = SpTokenizer(SpOptions{});
  ASSERT_NE(t, nullptr);
  // "<s>" is cut out first; the rest is normalized on its own, so it gets its own "▁" (HF's legacy behavior).
  EXPECT_THAT(Enc(*t, "<s>hello</s>"), ElementsAre(1, 1, Id("▁hello"), 2));
}

TEST(SentencePieceTokenizerTest, MetaspacePrependSchemes) {
  SpOptions first;
  first.metaspace_scheme = "first";
  auto t = SpTokenizer(first);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "hello world", false), ElementsAre(Id("▁hello"), Id("▁world")));
  // After a special token the text does not start the input: no "▁" is prepended ("hello" -> he, llo).
  EXPECT_THAT(Enc(*t, "<s>hello", false), ElementsAre(1, Id("he"), Id("llo")));

  SpOptions always = first;
  always.metaspace_scheme = "always";
  auto a = SpTokenizer(always);
  ASSERT_NE(a, nullptr);
  EXPECT_THAT(Enc(*a, "<s>hello", false), ElementsAre(1, Id("▁hello")));

  SpOptions never = first;
  never.metaspace_scheme = "never";
  auto n = SpTokenizer(never);
  ASSERT_NE(n, nullptr);
  EXPECT_THAT(Enc(*n, "hello world", false), ElementsAre(Id("he"), Id("llo"), Id("▁world")));

  SpOptions split = first;
  split.metaspace_split = true;
  auto s = SpTokenizer(split);
  ASSERT_NE(s, nullptr);
  // Split before each "▁": words "▁hello", "▁", "▁world" (the double space leaves a lone "▁").
  EXPECT_THAT(Enc(*s, "hello  world", false), ElementsAre(Id("▁hello"), Id("▁"), Id("▁world")));
}

TEST(SentencePieceTokenizerTest, AddedTokenFlags) {
  auto added = [](int id, const char* content, bool lstrip, bool rstrip, bool single_word) {
    return json{{"id", id},         {"content", content}, {"single_word", single_word},
                {"lstrip", lstrip}, {"rstrip", rstrip},   {"normalized", false},
                {"special", false}};
  };
  const int32_t mask = 259 + static_cast<int32_t>(kPieces.size());
  {
    SpOptions o;
    o.extra_added = json::array({added(mask, "<mask>", true, false, false)});
    auto t = SpTokenizer(o);
    ASSERT_NE(t, nullptr);
    // lstrip swallows the space before the token.
    EXPECT_THAT(Enc(*t, "hello <mask>", false), ElementsAre(Id("▁hello"), mask));
    EXPECT_EQ(t->vocab_size(), mask + 1);
  }
  {
    SpOptions o;
    o.extra_added = json::array({added(mask, "<mask>", false, false, false)});
    auto t = SpTokenizer(o);
    ASSERT_NE(t, nullptr);
    EXPECT_THAT(Enc(*t, "hello <mask>", false), ElementsAre(Id("▁hello"), Id("▁"), mask));
  }
  {
    SpOptions o;
    o.extra_added = json::array({added(mask, "<mask>", false, true, false)});
    auto t = SpTokenizer(o);
    ASSERT_NE(t, nullptr);
    // rstrip swallows the spaces after it.
    EXPECT_THAT(Enc(*t, "<mask>  world", false), ElementsAre(mask, Id("▁world")));
  }
  {
    SpOptions o;
    o.extra_added = json::array({added(mask, "<mask>", false, false, true)});
    auto t = SpTokenizer(o);
    ASSERT_NE(t, nullptr);
    // single_word: matched between spaces, not inside a word.
    // "he " -> "▁he▁" -> ▁he, ▁;  " he" -> "▁▁he" -> ▁, ▁he.
    EXPECT_THAT(Enc(*t, "he <mask> he", false), ElementsAre(Id("▁he"), Id("▁"), mask, Id("▁"), Id("▁he")));
    auto inside = Enc(*t, "he<mask>", false);
    EXPECT_EQ(std::count(inside.begin(), inside.end(), mask), 0);
  }
}

TEST(SentencePieceTokenizerTest, IgnoreMerges) {
  SpOptions o;
  o.metaspace_scheme = "never";
  json j = SentencePieceJson(o);
  j["model"]["vocab"]["lo"] = 400;  // in the vocabulary, but no merge builds it
  for (bool ignore : {false, true}) {
    j["model"]["ignore_merges"] = ignore;
    auto t = Tokenizer::FromJsonText(j.dump(), "ignore-merges/tokenizer.json");
    ASSERT_TRUE(t.ok()) << t.status();
    if (ignore) {
      EXPECT_THAT(Enc(**t, "lo", false), ElementsAre(400));
    } else {
      EXPECT_THAT(Enc(**t, "lo", false), ElementsAre(Id("l"), Id("o")));
    }
  }
}

TEST(FixtureVariantsTest, UnicodeNormalizers) {
  const std::string shared = SharedDir();
  if (shared.empty()) GTEST_SKIP() << "shared data not found: set LLMC_SHARED_DIR to the shared/ folder";
  json j = json::parse(ReadAll(shared + "/models/llmc-fixture-llama/tokenizer.json"));
  // Qwen2-style: NFC, then the Llama-3/Qwen regex as a Split, then ByteLevel without its own regex.
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"},
                     {"pattern", {{"Regex", kLlama3PatternForTests}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  auto nfc = Tokenizer::FromJsonText(j.dump(), "nfc/tokenizer.json");
  ASSERT_TRUE(nfc.ok()) << nfc.status();
  EXPECT_EQ(Enc(**nfc, "caf\u00e9 na\u00efve"), Enc(**nfc, "cafe\u0301 nai\u0308ve"));

  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers", json::array({{{"type", "NFKC"}},
                                   {{"type", "Lowercase"}},
                                   {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}})}};
  auto lower = Tokenizer::FromJsonText(j.dump(), "lower/tokenizer.json");
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(Enc(**lower, " \u3000HELLO \uFF37ORLD\u00a0 "), Enc(**lower, "hello world"));
  // The final capital sigma lowercases to U+03C3 as Rust's char::to_lowercase does (no final-sigma rule).
  EXPECT_EQ(Enc(**lower, "\u039F\u03A3"), Enc(**lower, "\u03BF\u03C3"));
}

// ---------------------------------------------------------------------------------------------------------------
// Pre-tokenizer regexes: Oniguruma semantics on PCRE2.

std::vector<std::string> SplitIsolated(const std::string& pattern, const std::string& text) {
  auto p = tok::Pattern::FromJson(json{{"Regex", pattern}}, "test");
  EXPECT_TRUE(p.ok()) << p.status();
  std::vector<tok::ByteRange> ranges;
  EXPECT_TRUE(tok::SplitByPattern(text, *p, tok::SplitBehavior::kIsolated, false, &ranges).ok());
  std::vector<std::string> out;
  for (const auto& r : ranges) out.push_back(text.substr(r.first, r.second - r.first));
  return out;
}

TEST(RegexTest, Gpt2Pattern) {
  EXPECT_THAT(SplitIsolated(tok::kGpt2Pattern, "Hello world's 12345  x\n\n y"),
              ElementsAre("Hello", " world", "'s", " 12345", " ", " x", "\n\n", " y"));
  // U+0085 (NEL) is \s to Oniguruma (PCRE2 alone would glue it to the space as punctuation: " \u0085").
  EXPECT_THAT(SplitIsolated(tok::kGpt2Pattern, "a \u0085b"), ElementsAre("a", " ", "\u0085", "b"));
  // U+180E (MONGOLIAN VOWEL SEPARATOR, Cf) is not \s to Oniguruma (PCRE2's \s would take it).
  EXPECT_THAT(SplitIsolated(tok::kGpt2Pattern, "a\u180e'll"), ElementsAre("a", "\u180e'", "ll"));
}

TEST(RegexTest, Llama3Pattern) {
  EXPECT_THAT(SplitIsolated(kLlama3PatternForTests, "I'LL pay 12345 dollars!!\n\n  ok"),
              ElementsAre("I", "'LL", " pay", " ", "123", "45", " dollars", "!!\n\n", " ", " ok"));
  EXPECT_THAT(SplitIsolated(kLlama3PatternForTests, "x  \n\ty"), ElementsAre("x", "  \n", "\ty"));
}

TEST(RegexTest, SplitBehaviors) {
  auto p = tok::Pattern::FromJson(json{{"String", "-"}}, "test");
  ASSERT_TRUE(p.ok());
  auto run = [&](tok::SplitBehavior b, bool invert) {
    const std::string text = "a-b--c";
    std::vector<tok::ByteRange> ranges;
    EXPECT_TRUE(tok::SplitByPattern(text, *p, b, invert, &ranges).ok());
    std::vector<std::string> out;
    for (const auto& r : ranges) out.push_back(text.substr(r.first, r.second - r.first));
    return out;
  };
  EXPECT_THAT(run(tok::SplitBehavior::kRemoved, false), ElementsAre("a", "b", "c"));
  EXPECT_THAT(run(tok::SplitBehavior::kIsolated, false), ElementsAre("a", "-", "b", "-", "-", "c"));
  EXPECT_THAT(run(tok::SplitBehavior::kMergedWithPrevious, false), ElementsAre("a-", "b-", "-", "c"));
  EXPECT_THAT(run(tok::SplitBehavior::kMergedWithNext, false), ElementsAre("a", "-b", "-", "-c"));
  EXPECT_THAT(run(tok::SplitBehavior::kContiguous, false), ElementsAre("a", "-", "b", "--", "c"));
  // Inverted: the letters are the delimiters; each "-" is its own match, so "--" stays two pieces.
  EXPECT_THAT(run(tok::SplitBehavior::kRemoved, true), ElementsAre("-", "-", "-"));
  EXPECT_THAT(run(tok::SplitBehavior::kContiguous, true), ElementsAre("a", "-", "b", "--", "c"));
}

// ---------------------------------------------------------------------------------------------------------------
// Errors name the file and the component.

TEST(TokenizerErrorsTest, MalformedAndUnsupportedFiles) {
  TempDir dir;
  {
    const std::string path = dir.Write("broken.json", "{\"version\": \"1.0\", \"model\": {");
    auto t = Tokenizer::FromFile(path);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr(path));
  }
  {
    auto t = Tokenizer::FromFile(dir.path() + "/missing.json");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  }
  {
    auto t = Tokenizer::FromModelDir(dir.path());
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.json"));
  }
  {
    json j = SentencePieceJson(SpOptions{});
    j["model"]["type"] = "Unigram";
    const std::string path = dir.Write("unigram.json", j.dump());
    auto t = Tokenizer::FromFile(path);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(t.status().message(), HasSubstr(path));
    EXPECT_THAT(t.status().message(), HasSubstr("Unigram"));
  }
  {
    json j = SentencePieceJson(SpOptions{});
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                         {{"type", "Whitespace"}}})}};
    auto t = Tokenizer::FromJsonText(j.dump(), "x/tokenizer.json");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(t.status().message(), HasSubstr("x/tokenizer.json: pre_tokenizer.pretokenizers[1]"));
    EXPECT_THAT(t.status().message(), HasSubstr("Whitespace"));
  }
  {
    json j = SentencePieceJson(SpOptions{});
    j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
    auto t = Tokenizer::FromJsonText(j.dump(), "y/tokenizer.json");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("y/tokenizer.json: normalizer"));
    EXPECT_THAT(t.status().message(), HasSubstr("Precompiled"));
  }
  {
    json j = SentencePieceJson(SpOptions{});
    j["model"]["merges"].push_back("▁hello nope");
    auto t = Tokenizer::FromJsonText(j.dump(), "z/tokenizer.json");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("nope"));
  }
  {
    json j = SentencePieceJson(SpOptions{});
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
    auto t = Tokenizer::FromJsonText(j.dump(), "w/tokenizer.json");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("w/tokenizer.json: pre_tokenizer.pattern"));
  }
  {
    auto t = Tokenizer::FromJsonText("[1, 2]", "array.json");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("array.json"));
  }
}

}  // namespace
}  // namespace llmc
