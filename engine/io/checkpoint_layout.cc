#include "engine/io/checkpoint_layout.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llmc {

namespace {

using json = nlohmann::json;

// A VL wrapper llmc reads, and the text family its text_config has when it names none.
struct MultimodalArchitecture {
  const char* name;
  const char* default_text_model_type;
};

constexpr MultimodalArchitecture kMultimodal[] = {
    {"Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl_text"},
    {"Qwen2VLForConditionalGeneration", "qwen2_vl_text"},
    {"Mistral3ForConditionalGeneration", "mistral"},
    {"Gemma3ForConditionalGeneration", "gemma3_text"},
    {"LlavaForConditionalGeneration", "llama"},
    {"Llama4ForConditionalGeneration", "llama4_text"},
};

// text_config.model_type -> the causal LM whose decoder it is. Qwen2-VL and Qwen2.5-VL text decoders are the
// Qwen2 decoder (q/k/v biases) with a multimodal rope that is plain rope on text.
struct TextFamily {
  const char* model_type;
  const char* causal_lm;
};

constexpr TextFamily kTextFamilies[] = {
    {"llama", "LlamaForCausalLM"},           {"mistral", "MistralForCausalLM"},
    {"qwen2", "Qwen2ForCausalLM"},           {"qwen2_vl_text", "Qwen2ForCausalLM"},
    {"qwen2_5_vl_text", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"},
    {"gemma", "GemmaForCausalLM"},           {"gemma2", "Gemma2ForCausalLM"},
    {"gemma3_text", "Gemma3ForCausalLM"},    {"phi3", "Phi3ForCausalLM"},
    {"llama4_text", "Llama4ForCausalLM"},
};

// The text decoder layouts, in the order they are tried: transformers >= 4.52 in memory (and what it saved
// then), transformers < 4.52 / the hub's Llava, Mistral 3 and Gemma 3, and Qwen2-VL's own.
struct DecoderLayout {
  const char* prefix;
  const char* lm_head;
};

constexpr DecoderLayout kLayouts[] = {
    {"model.language_model.", "lm_head"},
    {"language_model.model.", "language_model.lm_head"},
    {"model.", "lm_head"},
};

absl::Status Invalid(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

std::string KnownTextModelTypes() {
  std::vector<std::string> v;
  for (const auto& f : kTextFamilies) v.push_back(f.model_type);
  return absl::StrJoin(v, ", ");
}

// The top-level part of a non-text tensor: its first name component, or the second after "model.".
std::string PartOf(const std::string& name) {
  size_t start = absl::StartsWith(name, "model.") ? 6 : 0;
  size_t dot = name.find('.', start);
  return name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
}

// Resolves the text rope for text-only input. Qwen2-VL's multimodal rope splits head_dim / 2 frequencies into
// sections fed by three position streams (time, height, width); text tokens have the same position in all
// three, so each frequency sees the token's position: plain rope with the same theta.
absl::Status ResolveTextRope(json* text, absl::string_view source) {
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = text->find(key);
    if (it == text->end() || !it->is_object()) continue;
    json& rope = *it;
    bool mrope = rope.contains("mrope_section");
    for (const char* type_key : {"rope_type", "type"}) {
      auto t = rope.find(type_key);
      if (t == rope.end() || !t->is_string()) continue;
      if (t->get<std::string>() == "mrope") {
        mrope = true;
        *t = "default";
      }
    }
    if (!mrope) continue;
    const json& sec = rope.contains("mrope_section") ? rope["mrope_section"] : json();
    if (!sec.is_null()) {
      if (!sec.is_array()) return Invalid(source, absl::StrCat("text_config.", key, ".mrope_section must be a list"));
      int64_t sum = 0;
      for (const auto& s : sec) {
        if (!s.is_number_integer() || s.get<int64_t>() < 0)
          return Invalid(source, absl::StrCat("text_config.", key, ".mrope_section must list non-negative integers"));
        sum += s.get<int64_t>();
      }
      int64_t heads = text->value("num_attention_heads", int64_t{0});
      int64_t head_dim = text->contains("head_dim") && (*text)["head_dim"].is_number_integer()
                             ? (*text)["head_dim"].get<int64_t>()
                             : (heads > 0 ? text->value("hidden_size", int64_t{0}) / heads : 0);
      if (head_dim > 0 && sum != head_dim / 2)
        return Invalid(source, absl::StrCat("text_config.", key, ".mrope_section sums to ", sum, " but head_dim ",
                                            head_dim, " has ", head_dim / 2, " rotary frequencies"));
    }
    rope.erase("mrope_section");
    rope.erase("mrope_interleaved");
  }
  return absl::OkStatus();
}

}  // namespace

std::string CheckpointLayout::LayerPrefix(int64_t layer) const {
  return absl::StrCat(decoder_prefix, "layers.", layer, ".");
}

bool CheckpointLayout::IsTextTensor(absl::string_view name) const {
  if (!multimodal) return true;
  if (absl::StartsWith(name, decoder_prefix)) return true;
  return name == lm_head || absl::StartsWith(name, absl::StrCat(lm_head, "."));
}

std::vector<std::string> CheckpointLayout::IgnorePatterns(bool lm_head_ignored) const {
  std::vector<std::string> out;
  if (!multimodal) return out;
  for (const auto& p : other_parts) out.push_back(absl::StrCat("re:.*", p, ".*"));
  if (lm_head_ignored) out.push_back("re:.*lm_head");
  return out;
}

std::string SupportedMultimodalArchitectureNames() {
  std::vector<std::string> v;
  for (const auto& a : kMultimodal) v.push_back(a.name);
  return absl::StrJoin(v, ", ");
}

absl::StatusOr<CheckpointLayout> ResolveCheckpointLayout(const ModelDir& dir) {
  const std::string source = (std::filesystem::path(dir.path()) / "config.json").string();
  const json& cj = dir.config_json();
  CheckpointLayout l;
  const auto& archs = dir.config().architectures;
  l.architecture = archs.empty() ? "" : archs[0];
  const bool has_vision = cj.contains("vision_config") && !cj["vision_config"].is_null();
  const MultimodalArchitecture* mm = nullptr;
  for (const auto& a : kMultimodal)
    if (l.architecture == a.name) mm = &a;
  if (mm == nullptr) {
    if (has_vision)
      return Invalid(source, absl::StrCat("architecture '", l.architecture,
                                          "' has a vision_config but is not a vision-language architecture llmc ",
                                          "reads; supported: ", SupportedMultimodalArchitectureNames()));
    l.text_architecture = l.architecture;
    l.text_config = cj;
    l.tie_word_embeddings = dir.config().tie_word_embeddings;
    return l;
  }
  l.multimodal = true;
  auto tc = cj.find("text_config");
  if (tc != cj.end() && tc->is_object()) {
    l.text_config = *tc;
  } else if ((tc == cj.end() || tc->is_null()) && cj.contains("hidden_size") && cj.contains("num_hidden_layers")) {
    // Qwen2-VL's configs of transformers 4 keep the text decoder's keys at the top level.
    l.text_config = cj;
    l.text_config.erase("vision_config");
    l.text_config.erase("model_type");
  } else {
    return Invalid(source, absl::StrCat(l.architecture, " needs a 'text_config' object (the text decoder's config), ",
                                        "or the decoder's keys (hidden_size, num_hidden_layers, ...) at the top level"));
  }
  l.text_model_type = l.text_config.value("model_type", std::string(mm->default_text_model_type));
  for (const auto& f : kTextFamilies)
    if (l.text_model_type == f.model_type) l.text_architecture = f.causal_lm;
  if (l.text_architecture.empty())
    return Invalid(source, absl::StrCat(l.architecture, ": text_config.model_type '", l.text_model_type,
                                        "' is not a text decoder family llmc knows; known: ", KnownTextModelTypes()));
  l.text_config["architectures"] = json::array({l.text_architecture});
  // transformers ties lm_head to the embeddings by the wrapper's flag when it has one.
  if (auto t = cj.find("tie_word_embeddings"); t != cj.end() && t->is_boolean())
    l.text_config["tie_word_embeddings"] = *t;
  l.tie_word_embeddings = l.text_config.value("tie_word_embeddings", false);
  // The whole model is loaded in the wrapper's dtype (what Gemma rounds its embedding scale to).
  for (const char* key : {"dtype", "torch_dtype"})
    if (auto d = cj.find(key); d != cj.end() && d->is_string()) {
      l.text_config["dtype"] = *d;
      l.text_config.erase("torch_dtype");
      break;
    }
  if (auto s = ResolveTextRope(&l.text_config, source); !s.ok()) return s;

  const DecoderLayout* layout = nullptr;
  for (const auto& d : kLayouts) {
    if (dir.Find(absl::StrCat(d.prefix, "embed_tokens.weight")) != nullptr) {
      layout = &d;
      break;
    }
  }
  if (layout == nullptr) {
    std::vector<std::string> tried;
    for (const auto& d : kLayouts) tried.push_back(absl::StrCat(d.prefix, "embed_tokens.weight"));
    return absl::InvalidArgumentError(absl::StrCat(
        dir.path(), ": ", l.architecture, " checkpoint has no text decoder embeddings (looked for ",
        absl::StrJoin(tried, ", "), "); the tensors do not match a layout llmc reads"));
  }
  l.decoder_prefix = layout->prefix;
  l.lm_head = layout->lm_head;
  if (dir.Find(l.lm_head + ".weight") == nullptr && dir.Find("lm_head.weight") != nullptr) l.lm_head = "lm_head";
  for (const auto& t : dir.tensors()) {
    const std::string& name = t.info->name;
    if (l.IsTextTensor(name)) continue;
    std::string part = PartOf(name);
    bool seen = false;
    for (const auto& p : l.other_parts) seen |= p == part;
    if (!seen) l.other_parts.push_back(part);
  }
  return l;
}

}  // namespace llmc
