// What the smoothing algorithms (SmoothQuant, AWQ) see of one decoder block: its Linear and norm weights (which
// they rescale in place), the statistics the calibration pass collected for the Linears' inputs, the weight
// scheme of each Linear, and, for AWQ's search, the forward of the module that consumes a set of Linears.
//
// The sequential pipeline implements it over a loaded DecoderBlock (engine/calib/decoder_block_view.h); tests
// implement it over a few small tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/format/quant_config.h"
#include "engine/model/linear_hooks.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// The statistics of one Linear input (shared by the Linears that read the same tensor, see InputGroup), as the
// calibration pass left them. Spans point into the calibration's storage: valid while the view is.
struct InputStatistics {
  int64_t tokens = 0;                        // calibration tokens seen
  absl::Span<const float> channel_max;       // [in_features] max |x| per channel, or empty when not collected
  absl::Span<const double> channel_abs_sum;  // [in_features] sum of |x| per channel, or empty
  absl::Span<const float> captured;          // [captured_tokens, in_features] inputs kept, whole sequences
  int64_t captured_tokens = 0;
  int64_t captured_seq_len = 0;              // the length of every captured sequence
};

// AWQ's search objective for one mapping, evaluated away from the host (BlockView::DeviceAwqLoss). Not
// thread-safe; valid while the view that made it is and its block's weights are unchanged.
class AwqLossEvaluator {
 public:
  virtual ~AwqLossEvaluator() = default;
  // The mean squared error, over every captured token and output feature, between the parent module's output with
  // each balance Linear's weight W replaced by AwqTrialWeight(W, s) and its output with the weights as held
  // (computed once, when the evaluator was made). `s` [cols] are the scales of the balance Linears' input channels.
  virtual absl::StatusOr<double> Loss(absl::Span<const double> s) = 0;
};

// One decoder block, for algorithms that rescale its weights. Not thread-safe.
class BlockView {
 public:
  virtual ~BlockView() = default;

  // The block's name prefix, "model.layers.<i>.".
  virtual std::string prefix() const = 0;
  // The dtype the model stores its weights in: rescaled weights and norms are rounded to it.
  virtual DType dtype() const = 0;
  // The block's Linear modules in forward order (q, k, v, o, gate, up, down). The pointers stay valid while the
  // view does; weights and biases may be changed in place (keeping their sizes).
  virtual std::vector<LinearWeight*> linears() = 0;
  // The block's norms that can absorb a scale, with their module names, in forward order ("<prefix>
  // input_layernorm", "<prefix>post_attention_layernorm"). Changeable in place like linears().
  virtual std::vector<std::pair<std::string, std::vector<float>*>> norms() = 0;
  // norms() hold the effective scale; the checkpoint stores it less this offset (1 for Gemma's (1 + w) norms).
  virtual float norm_offset() const { return 0.0f; }
  // The statistics of the input `module` reads, or nullopt when calibration collected none for it.
  virtual std::optional<InputStatistics> input_statistics(const std::string& module) const = 0;
  // The config group that quantizes `module`'s weight, or null when its weight is not quantized.
  virtual const ConfigGroup* weight_group(const std::string& module) const = 0;
  // Whether `module` is a mixture-of-experts router (never quantized): AWQ scales its input columns with the
  // experts it balances, but neither quantizes it in the search nor counts it in the weight means.
  virtual bool IsRouter(const std::string& module) const { return false; }
  // Whether `module` belongs to one mixture-of-experts expert (not the shared expert): with routed-only calibration
  // it may have seen no token, and AWQ then skips its mapping, as llm-compressor does.
  virtual bool IsExpert(const std::string& module) const { return false; }
  // The output of the module that consumes `balance`'s outputs -- the attention block up to o_proj's output for
  // q/k/v, the MLP up to down_proj's output for gate/up, the whole mixture-of-experts MLP (routing, experts,
  // shared expert) when balance[0] is its router, the Linear balance[0] itself otherwise -- run on the
  // inputs captured for balance[0]'s input, with balance[i]'s weight replaced by *weights[i] (null: as the block
  // holds it). `out` is resized to [captured_tokens, output features]. `balance` are pointers from linears().
  virtual absl::Status ParentForward(absl::Span<LinearWeight* const> balance,
                                     absl::Span<const std::vector<float>* const> weights,
                                     std::vector<float>* out) = 0;
  // An evaluator of AWQ's loss for `balance` (the parent and inputs of ParentForward) on the device the block runs
  // on, or null when the search runs on the host (the default) or the device cannot run this parent or scheme.
  // Errors of the device (allocation, launches) as they come.
  virtual absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> DeviceAwqLoss(absl::Span<LinearWeight* const> balance) {
    return std::unique_ptr<AwqLossEvaluator>();
  }
};

// The last component of a module name: "q_proj" for "model.layers.0.self_attn.q_proj".
std::string LinearLeaf(const std::string& module);
// The input tensor `module` reads, named after the Linears that share it: q/k/v read "<parent>qkv", gate/up read
// "<parent>gate_up" (Mixtral's w1/w3 "<parent>w1_w3"), every other Linear its own input (the module name).
std::string InputGroup(const std::string& module);
// Whether the recipe target `pattern` (exact name or "re:" regex, TargetMatcher) names `module`; false for an
// invalid pattern.
bool MatchesTarget(const std::string& pattern, const std::string& module);

}  // namespace llmc
