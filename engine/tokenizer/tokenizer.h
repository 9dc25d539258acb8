// Tokenizer: reads a Hugging Face tokenizer.json and encodes text to the same ids as the `tokenizers` library
// (Tokenizer.from_file(path).encode(text, add_special_tokens).ids), and decodes ids back to text.
//
// Supported: BPE models, both byte-level (GPT-2 / Llama-3 / Qwen2: ByteLevel pre-tokenizer or Split regex +
// ByteLevel) and SentencePiece-style (Llama-2 / Mistral: Prepend+Replace normalizer or Metaspace
// pre-tokenizer, byte_fallback, fuse_unk); added/special tokens with their
// lstrip/rstrip/single_word/normalized flags; Template/Roberta/Bert/ByteLevel post-processors. The components
// each file section may use are listed in normalizer.h, pre_tokenizer.h, post_processor.h and decoder.h;
// anything else fails to load with an error that names the file and the component. The "truncation" and
// "padding" sections are ignored (as transformers does unless asked), so Encode never truncates or pads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc {

namespace tok {
class AddedVocabulary;
class BpeModel;
class Decoder;
class Normalizer;
class PostProcessor;
class PreTokenizer;
}  // namespace tok

// Immutable after loading. Encode, Decode and the accessors are thread-safe and may run concurrently (the BPE
// word cache inside is internally locked).
class Tokenizer {
 public:
  // Loads `tokenizer_json_path`. bos_id / eos_id come from a tokenizer_config.json beside it (bos_token /
  // eos_token) when there is one, else from the post-processor's template, else from a generation_config.json
  // beside it. Errors: NOT_FOUND / PERMISSION_DENIED for the file; INVALID_ARGUMENT for malformed JSON or
  // content; UNIMPLEMENTED for unsupported model types or components; each message names the file.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json_path);
  // Loads `dir`/tokenizer.json as FromFile does; NOT_FOUND (naming the directory) when there is none.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModelDir(const std::string& dir);
  // Parses tokenizer.json text held in memory; `source` names it in errors. No files beside it are read.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonText(absl::string_view json_text,
                                                                 const std::string& source);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids of `text`, with the post-processor's special tokens (e.g. BOS) when `add_special_tokens`.
  // INVALID_ARGUMENT if `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, bool add_special_tokens) const;

  // The text of `ids` through the file's decoder; special tokens are left out when `skip_special_tokens`.
  // Unlike HF, which silently drops ids it does not know, an id outside the vocabulary is INVALID_ARGUMENT.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // One more than the largest id of the model vocabulary and the added tokens (the embedding rows needed).
  int64_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  // The id of a token string (added tokens first, then the model vocabulary).
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token string of an id (added tokens first, then the model vocabulary), or nullopt.
  std::optional<std::string> IdToToken(int32_t id) const;

 private:
  Tokenizer();
  const std::string* TokenOf(int32_t id) const;

  std::string source_;
  std::unique_ptr<tok::Normalizer> normalizer_;       // may be null
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer_;  // may be null
  std::unique_ptr<tok::BpeModel> model_;
  std::unique_ptr<tok::AddedVocabulary> added_;
  std::unique_ptr<tok::PostProcessor> post_processor_;  // may be null
  std::unique_ptr<tok::Decoder> decoder_;               // may be null
  int64_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_, eos_id_;
};

}  // namespace llmc
