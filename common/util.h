// Small utilities shared by every llmc component: sizes, errno messages, time. (UTF-8: common/utf8.h.)
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "common/utf8.h"  // IsValidUtf8, kept here for its users

namespace llmc {

// Parses a size such as "5GB", "500MB", "1.5GiB", "4096" (bytes). Decimal units (KB, MB, GB, TB) are powers
// of 1000 as in Hugging Face's max_shard_size; binary units (KiB, MiB, GiB, TiB) powers of 1024.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// Formats a byte count for people: "1.23 GB" (decimal units).
std::string FormatBytes(uint64_t bytes);

// "strerror(errno)" for a given errno value, thread-safe.
std::string ErrnoString(int err);

// Builds an absl::Status from an errno value: ENOSPC/EDQUOT -> RESOURCE_EXHAUSTED, ENOENT -> NOT_FOUND,
// EACCES/EPERM -> PERMISSION_DENIED, otherwise INTERNAL. The message is "<what>: <strerror>".
absl::Status ErrnoToStatus(int err, absl::string_view what);

// Whether `name` is 1..max_len characters of [A-Za-z0-9._-] and does not start with '.': safe as a file name and
// as a key on the wire (rendezvous keys).
bool IsPortableName(absl::string_view name, size_t max_len);

// Monotonic seconds since an arbitrary point.
double NowSeconds();

// Wall-clock milliseconds since the Unix epoch (timestamps stored and shown to people).
int64_t NowMs();

// Monotonic milliseconds since an arbitrary point (timeouts, rate limits).
int64_t SteadyMs();

// Peak resident set size of this process in bytes (from getrusage).
uint64_t PeakRssBytes();

}  // namespace llmc
