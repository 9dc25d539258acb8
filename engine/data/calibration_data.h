// Calibration data: documents from text or JSONL files, tokenized and cut into samples, deterministically for
// a given seed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc {

// Reads documents from `path` (a local path or file:// URI):
//  - *.jsonl / *.json lines: one JSON object per line with a "text" string, or "messages" (a list of
//    {"role", "content"}) rendered with RenderMessages; blank lines are skipped;
//  - anything else: plain UTF-8 text, documents separated by one or more blank lines.
// Errors name the file (and line for JSONL) and say what is expected. s3:// is not supported yet.
absl::StatusOr<std::vector<std::string>> LoadDocuments(const std::string& path);

// The plain rendering of a chat: one "role: content" paragraph per message, separated by a blank line, e.g.
// "system: You are terse.\n\nuser: Hi\n\nassistant: Hello." Roles and content must be strings.
absl::StatusOr<std::string> RenderMessages(const nlohmann::json& messages, absl::string_view where);

enum class SampleMode {
  kConcatChunk,  // tokenize all documents as one stream (joined by a blank line), cut seq_len windows
  kPerDocument,  // one sample per document, truncated to seq_len
};

struct CalibrationOptions {
  int num_samples = 128;
  int seq_len = 512;
  uint64_t seed = 42;
  SampleMode mode = SampleMode::kConcatChunk;
  // When set, every sample starts with this token (it counts toward seq_len).
  std::optional<int32_t> bos_id;
};

// Tokenizes without special tokens.
using EncodeFn = std::function<absl::StatusOr<std::vector<int32_t>>(absl::string_view)>;

struct CalibrationSamples {
  std::vector<std::vector<int32_t>> samples;  // each at most seq_len tokens
  std::vector<std::string> warnings;          // fewer or shorter samples than asked, skipped empty documents
  int64_t total_tokens() const;
};

// Builds the samples. kConcatChunk: the windows are chosen by a seeded shuffle of all full windows and kept in
// file order; kPerDocument: documents are shuffled with the seed, empty ones skipped. Fewer samples than asked
// (or samples shorter than seq_len in kPerDocument) produce a warning, none at all an error. The same inputs and
// seed always give the same samples (the shuffle is our own Fisher-Yates over a 64-bit Mersenne Twister, so it
// does not depend on the standard library).
absl::StatusOr<CalibrationSamples> BuildCalibrationSamples(const std::vector<std::string>& documents,
                                                           const EncodeFn& encode, const CalibrationOptions& options);

// Deterministic Fisher-Yates permutation of [0, n) for `seed`.
std::vector<size_t> SeededPermutation(size_t n, uint64_t seed);

}  // namespace llmc
