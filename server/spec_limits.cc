#include "server/spec_limits.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/utf8.h"

namespace llmc::server {

std::string Truncated(absl::string_view s) {
  if (s.size() <= kMaxQuotedBytes) return std::string(s);
  size_t n = kMaxQuotedBytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // never cut a UTF-8 sequence
  return absl::StrCat(s.substr(0, n), "... (", s.size(), " bytes)");
}

std::string Quote(absl::string_view s) { return absl::StrCat("'", Truncated(s), "'"); }

absl::Status CheckText(absl::string_view field, absl::string_view value, size_t max_bytes, TextKind kind) {
  if (value.size() > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", value.size(), " bytes, more than the limit of ",
                                                   max_bytes, " bytes"));
  if (!IsValidUtf8(value))
    return absl::InvalidArgumentError(absl::StrCat(field, ": not valid UTF-8 text; send UTF-8"));
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    const bool allowed = kind == TextKind::kMultiline && (c == '\t' || c == '\n' || c == '\r');
    if ((c < 0x20 || c == 0x7f) && !allowed)
      return absl::InvalidArgumentError(absl::StrCat(field, ": control character 0x", absl::Hex(c, absl::kZeroPad2),
                                                     " at byte ", i, kind == TextKind::kLine ? " (NUL, line breaks and other control characters are not allowed)" : " (only tab, CR and LF are allowed)"));
  }
  return absl::OkStatus();
}

absl::Status CheckSpecLimits(const v1::JobSpec& spec, const SpecLimits& limits) {
  LLMC_RETURN_IF_ERROR(CheckText("spec.model_uri", spec.model_uri(), kMaxUriBytes));
  LLMC_RETURN_IF_ERROR(CheckText("spec.output_uri", spec.output_uri(), kMaxUriBytes));
  LLMC_RETURN_IF_ERROR(CheckText("spec.calibration.dataset_uri", spec.calibration().dataset_uri(), kMaxUriBytes));
  LLMC_RETURN_IF_ERROR(CheckText("spec.eval_text_uri", spec.eval_text_uri(), kMaxUriBytes));
  if (spec.has_preset()) {
    LLMC_RETURN_IF_ERROR(CheckText("spec.preset.scheme", spec.preset().scheme(), kMaxNameBytes));
    LLMC_RETURN_IF_ERROR(CheckText("spec.preset.algorithm", spec.preset().algorithm(), kMaxNameBytes));
  }
  LLMC_RETURN_IF_ERROR(CheckText("spec.recipe_yaml", spec.recipe_yaml(), kMaxRecipeBytes, TextKind::kMultiline));
  LLMC_RETURN_IF_ERROR(CheckText("spec.max_shard_size", spec.max_shard_size(), kMaxNameBytes));
  LLMC_RETURN_IF_ERROR(CheckText("spec.observer", spec.observer(), kMaxNameBytes));
  LLMC_RETURN_IF_ERROR(CheckText("spec.calibration_activations", spec.calibration_activations(), kMaxNameBytes));
  LLMC_RETURN_IF_ERROR(CheckText("spec.precision", spec.precision(), kMaxNameBytes));
  if (static_cast<size_t>(spec.ignore_size()) > kMaxIgnoreEntries)
    return absl::InvalidArgumentError(absl::StrCat("spec.ignore: ", spec.ignore_size(), " entries, more than the limit of ",
                                                   kMaxIgnoreEntries, "; use re: patterns"));
  for (int i = 0; i < spec.ignore_size(); ++i)
    LLMC_RETURN_IF_ERROR(CheckText(absl::StrCat("spec.ignore[", i, "]"), spec.ignore(i), kMaxIgnoreEntryBytes));
  if (static_cast<size_t>(spec.labels_size()) > kMaxLabels)
    return absl::InvalidArgumentError(absl::StrCat("spec.labels: ", spec.labels_size(), " labels, more than the limit of ",
                                                   kMaxLabels));
  for (const auto& [k, v] : spec.labels()) {
    LLMC_RETURN_IF_ERROR(CheckText("spec.labels key", k, kMaxLabelKeyBytes));
    if (k.empty() || v.size() > kMaxLabelValueBytes)
      return absl::InvalidArgumentError(absl::StrCat("spec.labels: key ", Quote(k), ": keys are 1-", kMaxLabelKeyBytes,
                                                     " bytes, values at most ", kMaxLabelValueBytes));
    LLMC_RETURN_IF_ERROR(CheckText(absl::StrCat("spec.labels[", Quote(k), "]"), v, kMaxLabelValueBytes));
  }
  const auto& cal = spec.calibration();
  // A data-free job (no calibration given) uses no samples.
  if (cal.dataset_uri().empty() && cal.num_samples() == 0 && cal.seq_len() == 0) return absl::OkStatus();
  const int64_t samples = cal.num_samples() > 0 ? cal.num_samples() : 128;
  const int64_t seq_len = cal.seq_len() > 0 ? cal.seq_len() : 512;
  if (samples > limits.max_num_samples)
    return absl::InvalidArgumentError(absl::StrCat("spec.calibration.num_samples ", samples, ": more than the limit of ",
                                                   limits.max_num_samples, " (llmc-server --max-num-samples)"));
  if (seq_len > limits.max_seq_len)
    return absl::InvalidArgumentError(absl::StrCat("spec.calibration.seq_len ", seq_len, ": more than the limit of ",
                                                   limits.max_seq_len, " (llmc-server --max-seq-len)"));
  if (samples * seq_len > limits.max_calibration_tokens)
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.calibration: num_samples x seq_len = ", samples * seq_len, " tokens, more than the limit of ",
        limits.max_calibration_tokens, " (llmc-server --max-calibration-tokens); use fewer or shorter samples"));
  return absl::OkStatus();
}

}  // namespace llmc::server
