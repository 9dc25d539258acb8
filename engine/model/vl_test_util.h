// Test helpers for vision-language checkpoints: a copy of a checkpoint under other tensor names (the layouts
// transformers writes differ by version) and/or another config.json; a tokenizer and text for calibrating the
// tiny checkpoints (which ship none). Header-only.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/io/safetensors.h"

namespace llmc::testing_util {

// Copies the single-file checkpoint `src` (config.json + model.safetensors) to `dst` (created), renaming every
// tensor with `rename` (identity when null; tensors keep their order and bytes) and passing config.json through
// `edit_config` (when set). Other files of `src` are copied as they are.
inline absl::Status CopyCheckpoint(const std::string& src, const std::string& dst,
                                   const std::function<std::string(const std::string&)>& rename,
                                   const std::function<void(nlohmann::json*)>& edit_config = nullptr) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dst, ec);
  if (ec) return absl::InternalError(absl::StrCat(dst, ": ", ec.message()));
  for (const auto& e : fs::directory_iterator(src, ec)) {
    const std::string name = e.path().filename().string();
    if (name == "model.safetensors" || name == "config.json") continue;
    fs::copy_file(e.path(), fs::path(dst) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat(name, ": ", ec.message()));
  }
  std::ifstream in(src + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
  if (config.is_discarded()) return absl::InternalError(src + "/config.json: not JSON");
  if (edit_config) edit_config(&config);
  std::ofstream(dst + "/config.json", std::ios::trunc) << config.dump(2) << "\n";
  auto file = SafetensorsFile::Open(src + "/model.safetensors");
  if (!file.ok()) return file.status();
  std::vector<TensorSpec> specs;
  for (const auto& t : (*file)->tensors()) specs.push_back({rename ? rename(t.name) : t.name, t.dtype, t.shape});
  auto w = SafetensorsWriter::Create(dst + "/model.safetensors", specs);
  if (!w.ok()) return w.status();
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::Status s = (*w)->Write(static_cast<int>(i), 0, (*file)->Data((*file)->tensors()[i]));
    if (!s.ok()) return s;
  }
  return (*w)->Close();
}

// Llama 4's vision-language wrapper (Llama4ForConditionalGeneration, as the hub stores Llama 4 Scout/Maverick:
// language_model.model.* and language_model.lm_head, text_config of model_type llama4_text) around the text
// checkpoint `src` (tiny-llama4text), written to `dst`. It has no vision tensors: the runtime never reads them.
inline absl::Status WrapAsLlama4Vl(const std::string& src, const std::string& dst) {
  return CopyCheckpoint(
      src, dst, [](const std::string& n) { return "language_model." + n; },
      [](nlohmann::json* c) {
        nlohmann::json text = *c;
        text.erase("architectures");
        text["model_type"] = "llama4_text";
        *c = {{"architectures", {"Llama4ForConditionalGeneration"}},
              {"model_type", "llama4"},
              {"dtype", text.value("dtype", "bfloat16")},
              {"text_config", text},
              {"vision_config", {{"model_type", "llama4_vision_model"}, {"hidden_size", 32}}}};
      });
}

// The tensor-name layout transformers >= 4.52 keeps in memory: the text decoder under model.language_model.,
// the vision tower and projector under model., lm_head at the top. Maps the two older layouts of the tiny
// checkpoints (Qwen2-VL's `model.` + `visual.`, and `language_model.model.` + `vision_tower.`) onto it.
inline std::string ToTransformers5Layout(const std::string& name) {
  for (const char* p : {"language_model.model.", "model."})
    if (absl::StartsWith(name, p)) return absl::StrCat("model.language_model.", name.substr(std::string(p).size()));
  if (absl::StartsWith(name, "language_model.lm_head")) return name.substr(std::string("language_model.").size());
  if (absl::StartsWith(name, "lm_head")) return name;
  return absl::StrCat("model.", name);
}

// A tokenizer.json for the tiny checkpoints: a BPE over the 26 lowercase letters (ids 0..25, inside the tiny
// vocabularies of 128), split on whitespace: enough to tokenize WordsText.
inline std::string TinyTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < 26; ++i) vocab[std::string(1, static_cast<char>('a' + i))] = i;
  nlohmann::json t = {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", nlohmann::json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
            {"post_processor", nullptr},
            {"decoder", nullptr},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"ignore_merges", false},
              {"vocab", vocab},
              {"merges", nlohmann::json::array()}}}};
  return t.dump();
}

// Pseudo-random lowercase words, in paragraphs.
inline std::string WordsText(uint32_t seed, int words) {
  std::mt19937 rng(seed);
  std::string s;
  for (int i = 0; i < words; ++i) {
    int len = 2 + static_cast<int>(rng() % 6);
    for (int c = 0; c < len; ++c) s += static_cast<char>('a' + rng() % 26);
    s += (i % 40 == 39) ? "\n\n" : " ";
  }
  return s;
}

}  // namespace llmc::testing_util
