// The mixture-of-experts MLP of Qwen3-MoE, Qwen2-MoE and Mixtral, beside the dense SwiGLU MLP of decoder_block.h:
//
//   p = softmax(router(m))                       fp32, over every expert              m = post_norm(x)  [rows, H]
//   (w, e) = top_k(p)                            num_experts_per_tok per token
//   w /= sum(w)                                  Mixtral always, Qwen when norm_topk_prob
//   y = sum_k w_k * down_e(silu(gate_e(m)) * up_e(m))            (each expert runs on its routed tokens only)
//   y += sigmoid(shared_expert_gate(m)) * shared_expert(m)       (Qwen2-MoE)
//
// as transformers 5 computes it (expert outputs added in expert order, each scaled before it is added).
// Qwen's `decoder_sparse_step` and `mlp_only_layers` make some layers dense: their MLP is the dense one of
// decoder_block.h with `intermediate_size`.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model/cpu_context.h"
#include "engine/model/linear_hooks.h"

namespace llmc {

// How an architecture lays out its experts.
enum class MoeStyle {
  kNone,     // dense MLP in every layer
  kQwen,     // mlp.gate, mlp.experts.N.{gate,up,down}_proj (+ mlp.shared_expert.*, mlp.shared_expert_gate)
  kMixtral,  // block_sparse_moe.gate, block_sparse_moe.experts.N.{w1,w3,w2}
  // Llama 4: feed_forward.router, feed_forward.experts.N.{gate,up,down}_proj (stored fused as
  // feed_forward.experts.gate_up_proj [E, H, 2I] and down_proj [E, I, H]), feed_forward.shared_expert.*. The
  // router's top-k logits pass through a sigmoid and scale each chosen expert's *input*; the shared expert is
  // added ungated: y = shared(m) + sum_k down_e(silu(gate_e(s_k m)) * up_e(s_k m)).
  kLlama4,
};

// The resolved MoE hyperparameters of one model (num_experts == 0: dense).
struct MoeSpec {
  MoeStyle style = MoeStyle::kNone;
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t expert_intermediate = 0;  // moe_intermediate_size (Qwen) / intermediate_size (Mixtral)
  int64_t shared_intermediate = 0;  // Qwen2-MoE shared expert (0: none)
  bool norm_topk_prob = false;
  std::vector<bool> sparse_layers;  // [num_layers]: true where the MLP is the MoE one

  bool enabled() const { return num_experts > 0; }
  bool IsSparse(int layer) const {
    return layer >= 0 && layer < static_cast<int>(sparse_layers.size()) && sparse_layers[layer];
  }
};

// Reads the MoE keys of config.json for `style` (num_experts / num_local_experts, num_experts_per_tok,
// moe_intermediate_size, norm_topk_prob, decoder_sparse_step, mlp_only_layers, shared_expert_intermediate_size;
// Llama 4: intermediate_size for the routed and shared experts, moe_layers or interleave_moe_layer_step).
// `shared_expert` says whether the architecture has one (Qwen2-MoE). Errors name `source` and the key.
absl::StatusOr<MoeSpec> ResolveMoeSpec(MoeStyle style, bool shared_expert, const nlohmann::json& config,
                                       int64_t num_layers, int64_t intermediate_size, absl::string_view source);

// Module names of a layer's MoE MLP, under the layer's name prefix `layer_prefix` (ModelSpec::layout.LayerPrefix:
// "model.layers.L." for a causal LM, the text decoder's for a vision-language checkpoint): "<prefix>mlp.gate", ...
std::string MoeRouterName(MoeStyle style, absl::string_view layer_prefix);
// which: gate, up, down
std::string MoeExpertName(MoeStyle style, absl::string_view layer_prefix, int64_t expert, const char* which);
// which: gate, up, down, or "gate_weight" (shared_expert_gate; Qwen2-MoE only)
std::string MoeSharedName(absl::string_view layer_prefix, const char* which, MoeStyle style = MoeStyle::kQwen);
// Llama 4's fused expert tensors of a layer: "<prefix>feed_forward.experts.gate_up_proj" / ".down_proj".
std::string MoeFusedExpertsName(absl::string_view layer_prefix, const char* which);
// Whether `module` is a router of an MoE family (mlp.gate, block_sparse_moe.gate, shared_expert_gate, mlp.router,
// feed_forward.router): the modules llmc leaves unquantized by default.
bool IsMoeRouter(absl::string_view module);
// The ignore patterns for those routers (added to the presets' default ignore).
const std::vector<std::string>& MoeRouterIgnorePatterns();

// One MoE MLP's fp32 weights.
struct MoeMlp {
  LinearWeight router;                          // [experts, hidden]
  std::vector<LinearWeight> gate, up, down;     // per expert: [I, H], [I, H], [H, I]
  LinearWeight shared_gate, shared_up, shared_down, shared_expert_gate;  // Qwen2-MoE, else empty
  bool active() const { return !gate.empty(); }
  bool has_shared() const { return shared_gate.out_features > 0; }
  bool has_shared_gate() const { return shared_expert_gate.out_features > 0; }
};

// Which tokens each expert takes: for expert e, tokens[e] (ascending) with weights[e].
struct MoeRouting {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> weights;
};
// Routes `rows` tokens from router logits [rows, experts] (softmax in fp32, top-k with ties to the lower expert
// index, renormalized as spec says; Llama 4: top-k of the logits, each weight sigmoid(logit)).
MoeRouting RouteTokens(const MoeSpec& spec, const float* logits, int64_t rows);
// sigmoid(shared_expert_gate(m)) of one token, the Qwen2-MoE shared expert's weight.
float SharedExpertScale(float gate_logit);

// out [rows, H] = the MoE MLP of m [rows, H] (see the top of this file). Hooks see the router's input, then each
// expert's gate, up and down inputs (in expert order), then the shared expert's. An expert that no token chose is
// skipped, unless hooks->SeeAllExperts(): then every expert runs on every token (the hooks see all of them) while
// only the routed outputs are added. Llama 4 scales a routed token's input instead of its output; with
// SeeAllExperts the hooks see every expert run on the unscaled inputs of every token (as llm-compressor's Llama 4
// calibration module feeds them), and the routed tokens then run again, scaled, for the output.
// Fails only when a hook fails.
absl::Status RunMoeMlp(const MoeSpec& spec, const MoeMlp& moe, const float* m, int64_t rows, int64_t hidden,
                       float* out, LinearHooks* hooks, CpuContext* ctx);

}  // namespace llmc
