// Hooks into the Linear modules of a running model, for calibration algorithms (GPTQ Hessians, activation
// statistics for SmoothQuant/AWQ, static scales) and for evaluating modified weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/quant/activation_quantizer.h"

namespace llmc {

// One Linear module's weights in fp32, as the runtime multiplies them: y = x W^T + b.
struct LinearWeight {
  std::string name;  // module name, e.g. "model.layers.3.self_attn.q_proj" or "lm_head"
  int layer = -1;    // decoder layer, -1 for lm_head
  int64_t out_features = 0;
  int64_t in_features = 0;
  std::vector<float> weight;  // [out_features, in_features] row-major
  std::vector<float> bias;    // [out_features], or empty
  // Fake quantization of the input [tokens, in_features] before the product and of the output [tokens,
  // out_features] after it (bias included), as the checkpoint's quantization_config says; null: fp32 as is.
  std::shared_ptr<const ActivationQuantizer> input_quant, output_quant;
};

// Observes and may rewrite the Linear modules of a model while it runs. Both methods default to doing
// nothing; a non-OK status aborts the load or the forward pass and is returned to its caller unchanged. The
// runtime calls the hooks from the thread that called it, one call at a time.
class LinearHooks {
 public:
  virtual ~LinearHooks() = default;

  // Called once per Linear when its block (or lm_head) is loaded, after the checkpoint tensor was converted
  // or dequantized to fp32 and before it is used. May change `w->weight` and `w->bias` in place (keeping
  // their sizes), e.g. to quantize-dequantize them; the runtime then runs with the new values.
  virtual absl::Status OnWeightLoaded(LinearWeight* w) { return absl::OkStatus(); }

  // Called before `w` multiplies `input` [tokens, w.in_features] (row-major fp32). A forward pass over many
  // tokens calls it several times per module, once per chunk of whole sequences; the chunks of one pass cover
  // every token exactly once (except lm_head in ComputePerplexity, which sees only the positions that predict
  // a token). q/k/v (and gate/up) get the same input, each in its own call. `input` is valid only during the
  // call.
  virtual absl::Status OnInput(const LinearWeight& w, absl::Span<const float> input, int64_t tokens) {
    return absl::OkStatus();
  }

  // Mixture-of-experts blocks (moe.h): whether every expert runs on every token so that OnInput sees all of them
  // (calibration of every expert); the block's output still adds only each token's routed experts. False: each
  // expert sees only the tokens routed to it (none at all when no token chose it).
  virtual bool SeeAllExperts() const { return false; }
};

}  // namespace llmc
