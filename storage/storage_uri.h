// Storage locations: `file:///abs/dir`, a plain local path, or `s3://bucket/prefix`.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::storage {

enum class UriScheme { kFile, kS3 };

// A parsed location. A location names a "directory": keys below it are relative paths joined with '/'.
struct StorageUri {
  UriScheme scheme = UriScheme::kFile;
  std::string path;    // kFile: absolute, normalized local path without a trailing '/' (except "/")
  std::string bucket;  // kS3
  std::string prefix;  // kS3: key prefix, no leading or trailing '/'; empty for the whole bucket

  bool is_s3() const { return scheme == UriScheme::kS3; }
  bool is_file() const { return scheme == UriScheme::kFile; }
  // Canonical text: "file:///abs/dir" or "s3://bucket/prefix" (or "s3://bucket").
  std::string ToString() const;
  // The location of `relative_key` below this one ("s3://b/p" + "x/y" -> "s3://b/p/x/y").
  StorageUri Child(absl::string_view relative_key) const;
  // The full object key of `relative_key` (kS3: "prefix/relative_key").
  std::string Key(absl::string_view relative_key) const;
};

// Parses `uri`. Accepted: "file:///abs/path" (percent-escapes decoded; host empty or "localhost"), a plain path
// (relative paths are made absolute against the working directory), "s3://bucket[/prefix][/]". Scheme names
// are case-insensitive. Errors (INVALID_ARGUMENT, UNIMPLEMENTED for other schemes such as gs://) name the URI.
absl::StatusOr<StorageUri> ParseStorageUri(absl::string_view uri);

// Whether `uri` starts with "s3://" (any case): a location that needs the network.
bool IsS3Uri(absl::string_view uri);

// "a/b" + "c" -> "a/b/c"; "" + "c" -> "c"; "a/b" + "" -> "a/b".
std::string JoinKey(absl::string_view prefix, absl::string_view relative_key);

// Checks that `key` is a safe relative object key that maps to a path below a directory: non-empty, no leading
// '/', no empty, "." or ".." segments, no NUL or backslash. INVALID_ARGUMENT naming the key otherwise.
absl::Status ValidateRelativeKey(absl::string_view key);

}  // namespace llmc::storage
