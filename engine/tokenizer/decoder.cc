#include "engine/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace llmc::tok {

namespace {

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& p : parts_) LLMC_RETURN_IF_ERROR(p->DecodeChain(tokens));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

// Byte-level characters back to bytes (a token with any other character is taken as its raw UTF-8), then the
// whole byte string as lossy UTF-8, as one token.
class ByteLevelDecoder final : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes, mapped;
    for (const std::string& t : *tokens) {
      mapped.clear();
      bool all = true;
      size_t pos = 0;
      while (pos < t.size()) {
        const int b = ByteLevelByteOf(NextCodePoint(t, &pos));
        if (b < 0) {
          all = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes.append(all ? mapped : t);
    }
    tokens->assign(1, Utf8Lossy(bytes));
    return absl::OkStatus();
  }
};

// Metaspace: the replacement character becomes a space, except in the first token when a prefix was
// prepended.
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] = absl::StrReplaceAll((*tokens)[i], {{replacement_, i == 0 && strip_first_ ? "" : " "}});
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<ByteRange> matches;
    for (std::string& t : *tokens) {
      matches.clear();
      LLMC_RETURN_IF_ERROR(pattern_.FindMatches(t, &matches));
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const ByteRange& m : matches) {
        out.append(t, prev, m.first - prev);
        out.append(content_);
        prev = m.second;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// "<0xAB>" -> 0xAB, as Rust's u8::from_str_radix(&token[3..5], 16) reads it; -1 if the token is not one.
int ByteFallbackValue(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (t[3] == '+') return hex(t[4]);  // from_str_radix accepts a leading '+'
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// ByteFallback: runs of <0xAB> tokens become their UTF-8 text, or one U+FFFD per byte if it is not valid
// UTF-8.
class ByteFallbackDecoder final : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (FindInvalidUtf8(pending) == absl::string_view::npos) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : *tokens) {
      const int b = ByteFallbackValue(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    *tokens = std::move(out);
    return absl::OkStatus();
  }
};

class FuseDecoder final : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    tokens->assign(1, absl::StrJoin(*tokens, ""));
    return absl::OkStatus();
  }
};

// Strip: removes up to `start` leading and `stop` trailing occurrences of `content` from each token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      std::vector<char32_t> chars;
      for (size_t pos = 0; pos < t.size();) chars.push_back(NextCodePoint(t, &pos));
      size_t begin = 0;
      while (begin < start_ && begin < chars.size() && chars[begin] == content_) ++begin;
      size_t end = chars.size();
      for (size_t i = 0; i < stop_ && end > begin && chars[end - 1] == content_; ++i) --end;
      std::string out;
      for (size_t i = begin; i < end; ++i) AppendUtf8(chars[i], &out);
      t = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

// BPEDecoder: the end-of-word suffix becomes a space (nothing after the last token).
class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    if (suffix_.empty()) return absl::OkStatus();
    for (size_t i = 0; i < tokens->size(); ++i)
      (*tokens)[i] = absl::StrReplaceAll((*tokens)[i], {{suffix_, i + 1 == tokens->size() ? "" : " "}});
    return absl::OkStatus();
  }

 private:
  std::string suffix_;
};

absl::StatusOr<char32_t> SingleChar(const nlohmann::json& j, const char* key, const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const std::string s, GetString(j, key, where));
  size_t pos = 0;
  if (s.empty()) return FieldError(where, key, "must be exactly one character");
  const char32_t cp = NextCodePoint(s, &pos);
  if (pos != s.size()) return FieldError(where, key, "must be exactly one character");
  return cp;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j, const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const std::string type, TypeOf(j, where));
  if (type == "Sequence") {
    LLMC_ASSIGN_OR_RETURN(const nlohmann::json* list, GetArray(j, "decoders", where));
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(auto part, ParseDecoder((*list)[i], absl::StrCat(where, ".decoders[", i, "]")));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    LLMC_ASSIGN_OR_RETURN(const char32_t replacement, SingleChar(j, "replacement", where));
    LLMC_ASSIGN_OR_RETURN(auto scheme, GetOptionalString(j, "prepend_scheme", where));
    bool prepends = !scheme || *scheme != "never";
    if (auto it = j.find("add_prefix_space"); it != j.end() && it->is_boolean() && !it->get<bool>())
      prepends = false;
    std::string rep;
    AppendUtf8(replacement, &rep);
    return std::make_unique<MetaspaceDecoder>(std::move(rep), prepends);
  }
  if (type == "Replace") {
    auto it = j.find("pattern");
    if (it == j.end()) return FieldError(where, "pattern", "is missing");
    LLMC_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(*it, absl::StrCat(where, ".pattern")));
    LLMC_ASSIGN_OR_RETURN(std::string content, GetString(j, "content", where));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    LLMC_ASSIGN_OR_RETURN(const char32_t content, SingleChar(j, "content", where));
    LLMC_ASSIGN_OR_RETURN(const int64_t start, GetUint(j, "start", 0, where));
    LLMC_ASSIGN_OR_RETURN(const int64_t stop, GetUint(j, "stop", 0, where));
    return std::make_unique<StripDecoder>(content, static_cast<size_t>(start), static_cast<size_t>(stop));
  }
  if (type == "BPEDecoder") {
    LLMC_ASSIGN_OR_RETURN(auto suffix, GetOptionalString(j, "suffix", where));
    return std::make_unique<BpeSuffixDecoder>(suffix.value_or("</w>"));
  }
  return absl::UnimplementedError(absl::StrCat(
      where, ": decoder type \"", type,
      "\" is not supported (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, "
      "Sequence)"));
}

}  // namespace llmc::tok
