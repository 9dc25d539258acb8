// A character-level BPE tokenizer over printable ASCII (ids 0..94, "<unk>" 95) for the tests of tiny models, whose
// small vocabularies hold it. Header-only.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace llmc::testing {

inline std::string CharTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = c - 32;
  vocab["<unk>"] = 95;
  nlohmann::json t = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array()},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}, {"unk_token", "<unk>"}}}};
  return t.dump();
}

// Writes tokenizer.json (the tokenizer above) and an empty tokenizer_config.json into the model directory `dir`.
inline void WriteCharTokenizer(const std::string& dir) {
  std::ofstream(dir + "/tokenizer.json") << CharTokenizerJson();
  std::ofstream(dir + "/tokenizer_config.json") << "{}";
}

}  // namespace llmc::testing
