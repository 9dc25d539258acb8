#include "engine/format/actorder.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmc {

absl::StatusOr<ActOrder> ParseActOrder(absl::string_view spelling) {
  const std::string s = absl::AsciiStrToLower(spelling);
  if (s.empty() || s == "none" || s == "null" || s == "false") return ActOrder::kNone;
  if (s == "static" || s == "weight") return ActOrder::kWeight;
  if (s == "group" || s == "dynamic" || s == "true") return ActOrder::kGroup;
  return absl::InvalidArgumentError(absl::StrCat("unknown actorder '", spelling,
                                                 "'; use none, static (= weight) or group (= dynamic)"));
}

absl::StatusOr<ResolvedActOrder> ResolveActOrder(absl::string_view where, const std::string& modifier_actorder,
                                                 const QuantArgs& weight_args) {
  LLMC_ASSIGN_OR_RETURN(ActOrder modifier, ParseActOrder(modifier_actorder));
  std::optional<ActOrder> scheme;
  if (weight_args.actorder) {
    LLMC_ASSIGN_OR_RETURN(ActOrder a, ParseActOrder(*weight_args.actorder));
    scheme = a;
  }
  ResolvedActOrder r;
  if (weight_args.strategy != Strategy::kGroup) {
    // The modifier leaves other strategies alone; quantize_weight permutes only group and tensor_group.
    r.config_value = weight_args.actorder;
    r.order = weight_args.strategy == Strategy::kTensorGroup && scheme ? *scheme : ActOrder::kNone;
    return r;
  }
  const std::string m = absl::AsciiStrToLower(modifier_actorder);
  if (m == "static") {  // the modifier's default (sentinel): the scheme's own value wins
    r.config_value = weight_args.actorder ? weight_args.actorder : std::optional<std::string>("static");
    r.order = scheme ? *scheme : ActOrder::kWeight;
    return r;
  }
  if (!scheme || *scheme == modifier) {
    if (modifier == ActOrder::kNone) {
      r.config_value.reset();
    } else {
      r.config_value = m;
    }
    r.order = modifier;
    return r;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      where, ": cannot resolve activation ordering: GPTQModifier.actorder is '", modifier_actorder,
      "' but the scheme's weights.actorder is '", *weight_args.actorder,
      "'; unset one of them (as llm-compressor requires)"));
}

}  // namespace llmc
