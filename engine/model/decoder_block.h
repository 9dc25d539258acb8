// One decoder block's fp32 weights and its forward pass on the CPU:
//   x += o_proj(attention(rope(q_norm?(q_proj(n))), rope(k_norm?(k_proj(n))), v_proj(n)))   n = input_norm(x)
//   x += down_proj(act(gate_proj(m)) * up_proj(m))                                           m = post_norm(x)
// and, with spec.sandwich_norms (Gemma), post_attention_norm on the attention output before its residual add,
// m = pre_feedforward_norm(x), and post_feedforward_norm on the MLP output before its residual add. The layer's
// window, rope, softmax scale and logit softcap come from the spec (ModelSpec::window, rope_for). Llama 4: no-rope
// layers skip the rotation (their q scaled by ModelSpec::query_temperature), rope layers rotate interleaved pairs
// and then L2-normalize q and k, and chunked layers attend within their chunk.
// In the sparse layers of a mixture-of-experts model the MLP is moe(m) instead (moe.h).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/architecture.h"
#include "engine/model/cpu_context.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/linear_hooks.h"
#include "engine/model/moe.h"

namespace llmc {

// The hidden states of a batch of equal-length sequences: [num_seqs * seq_len, hidden] row-major fp32,
// sequence-major (token t of sequence s is row s * seq_len + t).
struct HiddenStates {
  int64_t num_seqs = 0;
  int64_t seq_len = 0;
  int64_t hidden = 0;
  std::vector<float> data;

  int64_t tokens() const { return num_seqs * seq_len; }
  float* row(int64_t t) { return data.data() + t * hidden; }
  const float* row(int64_t t) const { return data.data() + t * hidden; }
};

// A loaded block. The Linear weights may be changed between forward passes (e.g. replaced with their
// quantized-dequantized values after calibration), keeping their sizes.
struct DecoderBlock {
  int layer = 0;
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> post_attention_norm;  // [hidden]
  std::vector<float> q_norm, k_norm;       // [head_dim] when spec.qk_norm, else empty
  std::vector<float> pre_feedforward_norm, post_feedforward_norm;  // [hidden] when spec.sandwich_norms
  // Norm weights hold the effective scale (checkpoint weight + spec.norm_offset).
  LinearWeight q_proj, k_proj, v_proj, o_proj;
  LinearWeight gate_proj, up_proj, down_proj;  // the dense MLP (empty in a sparse layer)
  // With spec.fused_projections (Phi-3) the checkpoint's fused Linears instead of q/k/v and gate/up:
  // qkv_proj [q_size + 2 kv_size, hidden] (rows q, then k, then v) and gate_up_proj [2 intermediate, hidden]
  // (rows gate, then up); q_proj, k_proj, v_proj, gate_proj and up_proj are then empty.
  LinearWeight qkv_proj, gate_up_proj;
  MoeMlp moe;  // the MoE MLP of a sparse layer (moe.active())
  // kv-cache fake quantization (kv_cache_scheme): k after the rotary embedding, v as projected, each row
  // [num_kv_heads * head_dim]; null when the checkpoint has none (or activation quantization is off).
  std::shared_ptr<const ActivationQuantizer> k_cache_quant, v_cache_quant;

  bool fused() const { return qkv_proj.out_features > 0; }
  // The Linear modules in the order the forward pass uses them: q, k, v (or qkv), o, then gate, up (or gate_up),
  // down, or the router, each expert's gate, up and down, and the shared expert's gate, up, down and gate weight.
  std::vector<LinearWeight*> linears();
  std::vector<const LinearWeight*> linears() const;
  // Bytes of fp32 weights held.
  uint64_t bytes() const;
};

// Runs `block` on every sequence of `x` in place. Sequences are processed in chunks of whole sequences of
// about `max_chunk_tokens` tokens (at least one sequence), which bounds the scratch memory to chunk_tokens *
// 2 * (hidden + q_size + kv_size + intermediate) floats; the result does not depend on the chunk size beyond
// float rounding. Linear inputs/outputs and k/v are fake-quantized where the block says (LinearWeight::input_quant,
// output_quant, k_cache_quant, v_cache_quant); hooks see a Linear's input before it is quantized. `rope` must cover x->seq_len positions. `hooks` may be null. Fails only when a hook fails.
absl::Status RunDecoderBlock(const ModelSpec& spec, const RopeTable& rope, const DecoderBlock& block,
                             HiddenStates* x, LinearHooks* hooks, int64_t max_chunk_tokens, CpuContext* ctx);

}  // namespace llmc
