// Limits on what a client sends, checked before a spec is parsed further or stored: sizes of every field of a
// JobSpec and request (fixed, documented in docs/api.md) and the calibration bounds the operator sets
// (llmc-server --max-num-samples, --max-seq-len, --max-calibration-tokens).
//
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/format/recipe.h"
#include "llmc/v1/compression.pb.h"

namespace llmc::server {

// The largest gRPC message the coordinator accepts (a spec at its limits is well below it).
inline constexpr int kMaxRequestBytes = 4 << 20;
inline constexpr size_t kMaxUriBytes = 4096;
inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr size_t kMaxLabels = 64;
inline constexpr size_t kMaxLabelKeyBytes = 63;
inline constexpr size_t kMaxLabelValueBytes = 256;
inline constexpr size_t kMaxIgnoreEntries = 1024;
inline constexpr size_t kMaxIgnoreEntryBytes = 512;
inline constexpr size_t kMaxNameBytes = 64;  // preset scheme and algorithm, observer, max_shard_size
// What an error message quotes of a client's string at most.
inline constexpr size_t kMaxQuotedBytes = 200;

// Upper bounds on calibration, set by the operator. A job's num_samples and seq_len count after defaults
// (0 means 128 and 512); a spec that gives no calibration (no dataset, both 0) is not bounded by them.
struct SpecLimits {
  int64_t max_num_samples = 4096;
  int64_t max_seq_len = 16384;
  int64_t max_calibration_tokens = int64_t{4} << 20;  // num_samples * seq_len
};

// INVALID_ARGUMENT naming the field and the limit when any field of `spec` is over its limit.
absl::Status CheckSpecLimits(const v1::JobSpec& spec, const SpecLimits& limits);

// Whether a client's string may hold line breaks: a recipe may (tabs, CR and LF); everything else that is logged
// or used as a path, name or label is one line.
enum class TextKind { kLine, kMultiline };

// INVALID_ARGUMENT naming the client's `field` when `value` is longer than `max_bytes`, is not valid UTF-8, or
// holds a control character (NUL, newline, ESC, DEL, ...; kMultiline allows tab, CR and LF). The message quotes
// none of the value, so it cannot forge a log line.
absl::Status CheckText(absl::string_view field, absl::string_view value, size_t max_bytes,
                       TextKind kind = TextKind::kLine);

// `s` for a message: at most kMaxQuotedBytes bytes of it, then "... (N bytes)"; Quote adds single quotes.
std::string Truncated(absl::string_view s);
std::string Quote(absl::string_view s);

}  // namespace llmc::server
