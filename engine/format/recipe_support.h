// What llmc implements of a recipe's quantization arguments. QuantArgs::FromJson and QuantConfig::Create accept
// every configuration compressed-tensors writes, because llmc also reads checkpoints made elsewhere (eval,
// inspect); a recipe must in addition ask only for what llmc produces, so that a checkpoint never advertises a
// setting that was not applied. The functions here draw that line: each setting is either settled to what runs
// or refused with an error that names the key and says what is supported. Pure: no model, no BLAS; the
// coordinator validates recipes with it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/format/quant_scheme.h"

namespace llmc {

// Which tensor a QuantArgs describes; what llmc can produce depends on it.
enum class QuantRole { kWeights, kInputActivations, kOutputActivations, kKvCache };

// The observers a recipe may name, lower case, as the library spells them.
const std::vector<std::string>& KnownObservers();
// "mse" or "memoryless_mse".
bool IsMseObserver(const std::optional<std::string>& observer);

// Checks every setting of `a` (the recipe's arguments for `role`, already parsed by QuantArgs::FromJson) against
// what llmc implements, and settles the observer to the one that runs, as the checkpoint's config will name it:
//  - weights are observed once: min-max (minmax, static_minmax, memoryless_minmax; none given = memoryless_minmax)
//    or mse (int and fp8 weights; its observer_kwargs norm, grid, maxshrink, and patience when it does not stop the
//    search early);
//  - static input activations, NVFP4's dynamic "local" activations and the kv cache are observed over all
//    calibration tokens: static_minmax (none given = static_minmax); other observers are refused;
//  - dynamic activations have no observer (the library drops it; observer_kwargs are refused);
//  - static output activations are refused (llmc writes no output scales).
// Also refused: settings the library itself rejects (group_size without a group strategy, block_structure
// without the block strategy, static token scales, "local" outside tensor_group) and scale_dtype / zp_dtype values
// other than the ones llmc writes. Errors are INVALID_ARGUMENT and start with `where` (e.g.
// "recipe.yaml: GPTQModifier.config_groups.group_0.weights").
absl::Status ResolveRecipeArgs(QuantArgs* a, QuantRole role, absl::string_view where);

// The recipe's spelling of one QuantArgs mapping, before QuantArgs::FromJson normalizes it the library's way
// (which silently drops an observer of dynamic arguments and a zp_dtype of symmetric ones): a recipe that sets
// either is refused, since the setting could not be applied. `where` names the mapping.
absl::Status CheckRecipeArgsSpelling(const nlohmann::json& args, absl::string_view where);

// ResolveRecipeArgs for each kind of `s`; also refuses a group without weights (llmc quantizes weights; an
// activation-only group would be advertised and applied to nothing). `where` names the group.
absl::Status ResolveRecipeScheme(QuantScheme* s, absl::string_view where);

// Class names a target may use: llmc knows a module's class only as "Linear" or "Embedding" (checkpoints carry no
// class names). Any other class name is refused, naming attention quantization when it names an attention class
// (LlamaAttention, ...: compressed-tensors' attention-targeted groups with q/k/v scales are not implemented).
// `where` names the list (e.g. "recipe.yaml: QuantizationModifier.config_groups.g.targets").
absl::Status CheckTargetClasses(const std::vector<std::string>& targets, absl::string_view where);

}  // namespace llmc
