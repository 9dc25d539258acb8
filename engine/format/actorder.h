// GPTQ's activation ordering as a recipe and a scheme spell it, and how the two settle into what runs and what
// the checkpoint's quantization_config says (GPTQModifier.resolve_quantization_config). Pure: no model, no
// BLAS; the coordinator validates recipes with it.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/format/quant_scheme.h"

namespace llmc {

// The column orders GPTQ can run in; the library's five spellings map to three algorithms.
enum class ActOrder {
  kNone,    // "none" / null / false
  kWeight,  // "weight" and its alias "static"
  kGroup,   // "group" and its alias "dynamic" (also `actorder: true` in a scheme)
};

// Parses a spelling (case-insensitive): "", "none", "null", "false" -> kNone; "static", "weight" -> kWeight;
// "group", "dynamic", "true" -> kGroup. Anything else fails listing the spellings.
absl::StatusOr<ActOrder> ParseActOrder(absl::string_view spelling);

// What GPTQModifier.resolve_quantization_config does for one weight: for the group strategy the modifier's
// actorder (default "static") applies unless the scheme sets its own -- when both are set and differ (as
// algorithms, "static" == "weight") it is an error, except that the modifier's default "static" yields to the
// scheme (llmc cannot tell a default "static" from an explicit one; the library's sentinel behaves this way).
// A modifier actorder of "none" is an explicit None. For other strategies the scheme's own actorder is kept.
struct ResolvedActOrder {
  std::optional<std::string> config_value;  // what the checkpoint's quantization_config writes (e.g. "static")
  ActOrder order = ActOrder::kNone;         // what the solver runs (kNone for channel/tensor strategies)
};
absl::StatusOr<ResolvedActOrder> ResolveActOrder(absl::string_view where, const std::string& modifier_actorder,
                                                 const QuantArgs& weight_args);

}  // namespace llmc
