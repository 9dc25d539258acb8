// SmoothQuant (https://arxiv.org/abs/2211.10438) on one decoder block, as llm-compressor's SmoothQuantModifier
// applies it (src/llmcompressor/modifiers/smoothquant/base.py): for each mapping, the smooth norm's output
// channels absorb 1/s and the balance Linears' input columns s, so the block computes the same function while the
// activations the balance Linears see lose their outlier channels. Per input channel c, with a = max |x_c| over
// the calibration tokens and w = max |W[:, c]| over every balance Linear,
//
//   s_c = a^alpha / w^(1 - alpha)   (alpha = smoothing_strength; s_c = a where w is 0; 1 where s_c is not a
//                                    positive finite number),
//
// then the norm and the balance weights are rounded to the model dtype (what the checkpoint stores).
//
// Mappings resolve in the block: the smooth module is the norm a mapping's `smooth` target names (the last of
// input_layernorm, post_attention_layernorm that matches), the balance Linears every Linear a `balance` target
// names, minus `ignore` (a Linear named by two balance targets is scaled twice). A mapping with no norm, no
// balance Linear or no statistics is skipped; an input_layernorm whose balance Linears are not q/k/v is an error.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/algo/block_view.h"
#include "engine/format/algorithms.h"

namespace llmc {

// The Linears whose input statistics (max |x| per channel) ApplySmoothQuant reads: every one of the block's
// `linears` (module names) that a mapping balances (ignore not applied), in mapping order, possibly repeated.
std::vector<std::string> SmoothQuantInputs(const SmoothQuantParams& params, const std::vector<std::string>& linears);

// Rescales the block's norms and balance weights in place (see the file comment). INVALID_ARGUMENT naming the
// mapping when an input_layernorm mapping balances Linears that do not read the norm's output.
absl::Status ApplySmoothQuant(const SmoothQuantParams& params, BlockView* block);

}  // namespace llmc
