#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/unicode.h"

namespace llmc::tok {

namespace {

pcre2_code* Code(void* p) { return static_cast<pcre2_code*>(p); }

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buf));
}

// Oniguruma's Unicode classes, written for PCRE2 (see regex.h). PCRE2's own \s also matches U+180E (as \h
// does), which Oniguruma does not, so spaces are spelled out: U+0009..U+000D, U+0085 and General_Category Z.
constexpr absl::string_view kSpaceClassBody = "\\x{09}-\\x{0D}\\x{85}\\p{Z}";
constexpr absl::string_view kWordClassBody = "\\p{L}\\p{M}\\p{N}\\p{Pc}";

// Rewrites \s, \S, \w and \W to their Oniguruma meaning. Tracks character classes so that inside `[...]` only
// the class body is inserted. \S and \W inside a class keep PCRE2's meaning (no tokenizer uses them there).
std::string RewriteForOniguruma(absl::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  const size_t n = p.size();
  size_t i = 0;
  while (i < n) {
    const char c = p[i];
    if (c == '\\' && i + 1 < n) {
      const char e = p[i + 1];
      if (e == 'Q') {  // \Q...\E quotes everything up to \E
        const size_t end = p.find("\\E", i + 2);
        const size_t stop = end == absl::string_view::npos ? n : end + 2;
        out.append(p.data() + i, stop - i);
        i = stop;
        continue;
      }
      if (e == 's') {
        out.append(in_class ? std::string(kSpaceClassBody) : absl::StrCat("[", kSpaceClassBody, "]"));
      } else if (e == 'S' && !in_class) {
        out.append(absl::StrCat("[^", kSpaceClassBody, "]"));
      } else if (e == 'w') {
        out.append(in_class ? std::string(kWordClassBody) : absl::StrCat("[", kWordClassBody, "]"));
      } else if (e == 'W' && !in_class) {
        out.append(absl::StrCat("[^", kWordClassBody, "]"));
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      ++i;
      if (i < n && p[i] == '^') out.push_back(p[i++]);
      if (i < n && p[i] == ']') out.push_back(p[i++]);  // a leading ']' is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {  // POSIX class such as [:alpha:]
      const size_t end = p.find(":]", i + 2);
      if (end != absl::string_view::npos) {
        out.append(p.data() + i, end + 2 - i);
        i = end + 2;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
    ++i;
  }
  return out;
}

// Match data for one FindAll call, with a large JIT stack created only if the default one overflows.
class MatchState {
 public:
  explicit MatchState(pcre2_code* code) : md_(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchState() {
    if (md_) pcre2_match_data_free(md_);
    if (ctx_) pcre2_match_context_free(ctx_);
    if (stack_) pcre2_jit_stack_free(stack_);
  }
  pcre2_match_data* md() const { return md_; }
  pcre2_match_context* ctx() const { return ctx_; }
  bool GrowJitStack() {
    if (stack_) return false;
    stack_ = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    ctx_ = pcre2_match_context_create(nullptr);
    if (!stack_ || !ctx_) return false;
    pcre2_jit_stack_assign(ctx_, nullptr, stack_);
    return true;
  }

 private:
  pcre2_match_data* md_;
  pcre2_match_context* ctx_ = nullptr;
  pcre2_jit_stack* stack_ = nullptr;
};

absl::StatusOr<bool> MatchOnce(pcre2_code* code, const std::string& pattern, MatchState* state,
                               absl::string_view text, size_t start, ByteRange* match) {
  if (state->md() == nullptr) return absl::ResourceExhaustedError("out of memory for PCRE2 match data");
  for (;;) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                               PCRE2_NO_UTF_CHECK, state->md(), state->ctx());
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && state->GrowJitStack()) continue;
    if (rc < 0) {
      return absl::ResourceExhaustedError(absl::StrCat("regex `", pattern, "` failed on a ", text.size(),
                                                       "-byte input: ", Pcre2Message(rc),
                                                       "; split the input into smaller pieces"));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state->md());
    *match = {ov[0], ov[1]};
    return true;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(absl::string_view pattern) {
  const std::string rewritten = RewriteForOniguruma(pattern);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("regex `", pattern,
                                                   "` does not compile: ", Pcre2Message(err), " (at offset ",
                                                   err_offset, " of `", rewritten, "`)"));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  std::unique_ptr<Regex> re(new Regex());
  re->pattern_ = std::string(pattern);
  re->code_ = code;
  return re;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(Code(code_));
}

absl::StatusOr<bool> Regex::Search(absl::string_view text) const {
  MatchState state(Code(code_));
  ByteRange m;
  return MatchOnce(Code(code_), pattern_, &state, text, 0, &m);
}

absl::Status Regex::FindAll(absl::string_view text, std::vector<ByteRange>* matches) const {
  MatchState state(Code(code_));
  const size_t n = text.size();
  size_t search_from = 0;
  std::optional<size_t> last_match_end;
  while (search_from <= n) {
    ByteRange m;
    auto found = MatchOnce(Code(code_), pattern_, &state, text, search_from, &m);
    if (!found.ok()) return found.status();
    if (!*found) break;
    if (m.first == m.second && last_match_end == m.second) {
      // An empty match right after the previous match: step one character and search again.
      if (search_from >= n) break;
      search_from += Utf8SequenceLength(static_cast<unsigned char>(text[search_from]));
      continue;
    }
    matches->push_back(m);
    search_from = m.second;
    last_match_end = m.second;
  }
  return absl::OkStatus();
}

absl::StatusOr<Pattern> Pattern::FromJson(const nlohmann::json& j, absl::string_view where) {
  if (j.is_object() && j.size() == 1) {
    if (auto it = j.find("String"); it != j.end() && it->is_string()) return Literal(it->get<std::string>());
    if (auto it = j.find("Regex"); it != j.end() && it->is_string()) {
      auto re = Regex::Compile(it->get<std::string>());
      if (!re.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", re.status().message()));
      Pattern p;
      p.regex_ = std::shared_ptr<const Regex>(std::move(*re));
      return p;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": expected {\"String\": \"...\"} or {\"Regex\": \"...\"}, got ", j.dump()));
}

Pattern Pattern::Literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

absl::Status Pattern::FindMatches(absl::string_view text, std::vector<ByteRange>* matches) const {
  if (regex_) return regex_->FindAll(text, matches);
  if (literal_.empty()) return absl::OkStatus();
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != absl::string_view::npos) {
    matches->push_back({pos, pos + literal_.size()});
    pos += literal_.size();
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitBehavior> ParseSplitBehavior(const nlohmann::json& j, absl::string_view where) {
  const std::string s = j.is_string() ? j.get<std::string>() : j.dump();
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": unknown split behavior ", s,
                   "; expected Removed, Isolated, MergedWithPrevious, MergedWithNext "
                   "or Contiguous"));
}

absl::Status SplitByPattern(absl::string_view text, const Pattern& pattern, SplitBehavior behavior,
                            bool invert, std::vector<ByteRange>* pieces) {
  struct Part {
    ByteRange range;
    bool is_match;
  };
  std::vector<Part> parts;
  if (text.empty()) {
    parts.push_back({{0, 0}, false});
  } else {
    std::vector<ByteRange> matches;
    if (auto s = pattern.FindMatches(text, &matches); !s.ok()) return s;
    parts.reserve(matches.size() * 2 + 1);
    size_t prev = 0;
    for (const ByteRange& m : matches) {
      if (prev != m.first) parts.push_back({{prev, m.first}, false});
      parts.push_back({m, true});
      prev = m.second;
    }
    if (prev != text.size()) parts.push_back({{prev, text.size()}, false});
  }
  if (invert)
    for (Part& p : parts) p.is_match = !p.is_match;

  // (range, remove) after applying the behavior, as HF's NormalizedString::split computes it.
  std::vector<std::pair<ByteRange, bool>> out;
  out.reserve(parts.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) out.push_back({p.range, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts) out.push_back({p.range, p.is_match});
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !out.empty()) {
          out.back().first.second = p.range.second;
        } else {
          out.push_back({p.range, false});
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !out.empty()) {
          out.back().first.second = p.range.second;
        } else {
          out.push_back({p.range, false});
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first.first = it->range.first;
        } else {
          out.push_back({it->range, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  for (const auto& [range, remove] : out)
    if (!remove && range.first != range.second) pieces->push_back(range);
  return absl::OkStatus();
}

}  // namespace llmc::tok
