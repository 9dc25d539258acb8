#include "engine/data/calibration_data.h"

#include <algorithm>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/io/model_dir.h"

namespace llmc {

using json = nlohmann::json;

int64_t CalibrationSamples::total_tokens() const {
  int64_t n = 0;
  for (const auto& s : samples) n += static_cast<int64_t>(s.size());
  return n;
}

absl::StatusOr<std::string> RenderMessages(const json& messages, absl::string_view where) {
  if (!messages.is_array() || messages.empty())
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"messages\" must be a non-empty list of {role, content}"));
  std::string out;
  for (const auto& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      return absl::InvalidArgumentError(absl::StrCat(where, ": every message needs string \"role\" and \"content\""));
    if (!out.empty()) out += "\n\n";
    absl::StrAppend(&out, m["role"].get<std::string>(), ": ", m["content"].get<std::string>());
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> LoadDocuments(const std::string& raw_path) {
  std::string path = raw_path;
  if (absl::StartsWith(path, "file://")) path = path.substr(7);
  else if (absl::StrContains(path, "://"))
    return absl::UnimplementedError(absl::StrCat(raw_path, ": only local paths and file:// URIs are supported for calibration data so far"));
  LLMC_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, uint64_t{4} << 30));
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid UTF-8 text"));
  std::vector<std::string> docs;
  if (absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json")) {
    int line_no = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      ++line_no;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      std::string where = absl::StrCat(path, ":", line_no);
      json j = json::parse(line.begin(), line.end(), nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object; JSONL needs one {\"text\": ...} or {\"messages\": [...]} per line"));
      if (j.contains("text") && j["text"].is_string()) {
        docs.push_back(j["text"].get<std::string>());
      } else if (j.contains("messages")) {
        LLMC_ASSIGN_OR_RETURN(std::string d, RenderMessages(j["messages"], where));
        docs.push_back(std::move(d));
      } else {
        return absl::InvalidArgumentError(absl::StrCat(where, ": needs a \"text\" string or a \"messages\" list"));
      }
    }
  } else {
    std::string cur;
    auto flush = [&] {
      if (!cur.empty()) docs.push_back(std::move(cur));
      cur.clear();
    };
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StripAsciiWhitespace(line).empty()) {
        flush();
        continue;
      }
      if (!cur.empty()) cur += '\n';
      cur.append(line.data(), line.size());
    }
    flush();
  }
  if (docs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": contains no documents"));
  return docs;
}

std::vector<size_t> SeededPermutation(size_t n, uint64_t seed) {
  std::vector<size_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = n; i > 1; --i) {
    // Unbiased draw in [0, i) by rejection.
    const uint64_t bound = i, limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = rng();
    while (r >= limit);
    std::swap(p[i - 1], p[r % bound]);
  }
  return p;
}

absl::StatusOr<CalibrationSamples> BuildCalibrationSamples(const std::vector<std::string>& documents,
                                                           const EncodeFn& encode, const CalibrationOptions& opt) {
  if (opt.num_samples <= 0) return absl::InvalidArgumentError("--num-samples must be positive");
  if (opt.seq_len < 2) return absl::InvalidArgumentError("--seq-len must be at least 2");
  const int body = opt.seq_len - (opt.bos_id ? 1 : 0);
  CalibrationSamples out;
  if (opt.mode == SampleMode::kConcatChunk) {
    std::string all;
    for (const auto& d : documents) {
      if (!all.empty()) all += "\n\n";
      all += d;
    }
    LLMC_ASSIGN_OR_RETURN(std::vector<int32_t> ids, encode(all));
    const size_t windows = ids.size() / static_cast<size_t>(body);
    if (windows == 0)
      return absl::InvalidArgumentError(absl::StrCat("calibration data has ", ids.size(), " tokens, fewer than one sample of ",
                                                     opt.seq_len, "; use more data or a smaller --seq-len"));
    std::vector<size_t> pick = SeededPermutation(windows, opt.seed);
    const size_t n = std::min<size_t>(windows, static_cast<size_t>(opt.num_samples));
    pick.resize(n);
    std::sort(pick.begin(), pick.end());
    for (size_t w : pick) {
      std::vector<int32_t> s;
      s.reserve(opt.seq_len);
      if (opt.bos_id) s.push_back(*opt.bos_id);
      s.insert(s.end(), ids.begin() + w * body, ids.begin() + (w + 1) * body);
      out.samples.push_back(std::move(s));
    }
    if (n < static_cast<size_t>(opt.num_samples))
      out.warnings.push_back(absl::StrCat("calibration data holds only ", n, " samples of ", opt.seq_len, " tokens (",
                                          opt.num_samples, " asked); using ", n));
    return out;
  }
  std::vector<size_t> order = SeededPermutation(documents.size(), opt.seed);
  int short_samples = 0, empty = 0;
  for (size_t i : order) {
    if (static_cast<int>(out.samples.size()) == opt.num_samples) break;
    LLMC_ASSIGN_OR_RETURN(std::vector<int32_t> ids, encode(documents[i]));
    if (ids.empty()) {
      ++empty;
      continue;
    }
    if (static_cast<int>(ids.size()) > body) ids.resize(body);
    if (static_cast<int>(ids.size()) < body) ++short_samples;
    if (opt.bos_id) ids.insert(ids.begin(), *opt.bos_id);
    out.samples.push_back(std::move(ids));
  }
  if (out.samples.empty()) return absl::InvalidArgumentError("calibration data has no non-empty document");
  if (static_cast<int>(out.samples.size()) < opt.num_samples)
    out.warnings.push_back(absl::StrCat("calibration data holds only ", out.samples.size(), " documents (",
                                        opt.num_samples, " samples asked); using ", out.samples.size()));
  if (short_samples > 0)
    out.warnings.push_back(absl::StrCat(short_samples, " samples are shorter than ", opt.seq_len, " tokens"));
  if (empty > 0) out.warnings.push_back(absl::StrCat("skipped ", empty, " empty documents"));
  return out;
}

}  // namespace llmc
