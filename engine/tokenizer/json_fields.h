// Typed reads of tokenizer.json fields that never throw: each error names `where` (the file and the JSON path
// of the component, e.g. "m/tokenizer.json: pre_tokenizer.pretokenizers[1]") and the key.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace llmc::tok {

inline absl::Status FieldError(absl::string_view where, absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": field \"", key, "\" ", what));
}

// The component's "type" string.
inline absl::StatusOr<std::string> TypeOf(const nlohmann::json& j, absl::string_view where) {
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object, got ", j.dump()));
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) return FieldError(where, "type", "is missing or not a string");
  return it->get<std::string>();
}

// A boolean; absent or null gives `def`.
inline absl::StatusOr<bool> GetBool(const nlohmann::json& j, const char* key, bool def,
                                    absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean())
    return FieldError(where, key, absl::StrCat("must be true or false, got ", it->dump()));
  return it->get<bool>();
}

// A string; absent or null gives nullopt.
inline absl::StatusOr<std::optional<std::string>> GetOptionalString(const nlohmann::json& j, const char* key,
                                                                    absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return FieldError(where, key, absl::StrCat("must be a string, got ", it->dump()));
  return std::optional<std::string>(it->get<std::string>());
}

// A required string.
inline absl::StatusOr<std::string> GetString(const nlohmann::json& j, const char* key,
                                             absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return FieldError(where, key, "is missing or not a string");
  return it->get<std::string>();
}

// A non-negative integer; absent or null gives `def`.
inline absl::StatusOr<int64_t> GetUint(const nlohmann::json& j, const char* key, int64_t def,
                                       absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number_unsigned())
    return FieldError(where, key, absl::StrCat("must be a non-negative integer, got ", it->dump()));
  return static_cast<int64_t>(it->get<uint64_t>());
}

// A required array.
inline absl::StatusOr<const nlohmann::json*> GetArray(const nlohmann::json& j, const char* key,
                                                      absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return FieldError(where, key, "is missing or not a list");
  return &*it;
}

}  // namespace llmc::tok
