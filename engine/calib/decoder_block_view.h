// The BlockView (engine/algo/block_view.h) of a loaded decoder block, for the smoothing algorithms: the block's
// weights, the statistics of a calibration pass over it, the recipe's weight schemes, and the parent modules'
// forward on the CPU runtime.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/algo/block_view.h"
#include "engine/calib/awq_parent.h"
#include "engine/calib/calib_stats.h"
#include "engine/format/algorithms.h"
#include "engine/format/quant_config.h"
#include "engine/model/causal_lm.h"
#include "engine/model/decoder_block.h"

namespace llmc {

// The smoothing mappings a SmoothQuant / AWQ run uses on `spec`'s family, as llm-compressor resolves them: the
// default mappings (DefaultSmoothQuantMappings / DefaultAwqMappings, which are Llama's) become the family's
// (Gemma: pre_feedforward_layernorm, not post_attention_layernorm, feeds gate/up; Phi-3: the fused qkv_proj and
// gate_up_proj; mixture-of-experts models: see MoeSmoothMappings); mappings a recipe gives are kept.
// INVALID_ARGUMENT naming `modifier` when a mapping smooths a norm whose output does not feed the balance layers
// in this family (Gemma's post_attention_layernorm).
absl::StatusOr<std::vector<SmoothMapping>> FamilySmoothMappings(const std::vector<SmoothMapping>& mappings,
                                                                const ModelSpec& spec, const char* modifier);

// llm-compressor's mappings for the mixture-of-experts families (its awq/mappings.py `_moe_default_mappings`, and
// smoothquant/utils.py, which smooths attention only for MoE models: one scale shared by every expert unbalances
// them). AWQ, Qwen3-MoE / Qwen2-MoE: input_layernorm -> q/k/v; v_proj -> o_proj; post_attention_layernorm -> the
// router (mlp.gate), every expert's gate_proj and up_proj and, unlike llm-compressor, whose pattern misses them, the
// Qwen2-MoE shared expert's gate_proj, up_proj and shared_expert_gate (they read the same norm output, so leaving
// them out would change the function); the same norm -> gate_proj/up_proj in the dense layers (mlp_only_layers);
// up_proj -> down_proj per expert (the dense-layer mapping only where the model has dense layers, so that every
// mapping matches some layer). Mixtral (not in llm-compressor's registry, whose default mapping would leave
// the router unbalanced): the same with block_sparse_moe.gate and the experts' w1 / w3 / w2.
std::vector<SmoothMapping> MoeAwqMappings(const ModelSpec& spec);
std::vector<SmoothMapping> MoeSmoothQuantMappings();
// The Linears of MoE layer `layer` that read post_attention_layernorm's output: the router, every expert's gate and
// up, and the shared expert's gate, up and gate weight.
std::vector<std::string> MoeNormReaders(const ModelSpec& spec, int layer);
// INVALID_ARGUMENT naming `modifier`, the mapping and a missing module when a mapping smooths an MoE layer's
// post_attention_layernorm but balances only some of the Linears that read it (minus `ignore`; a router that
// `ignore` names still counts when `routers_balanced_when_ignored`, as AWQ keeps it): the block would compute
// another function. OK for dense models and mappings that balance all or none of them.
absl::Status CheckMoeSmoothMappings(const std::vector<SmoothMapping>& mappings, const std::vector<std::string>& ignore,
                                    bool routers_balanced_when_ignored, const ModelSpec& spec, const char* modifier);

// Everything it is given must outlive it; `block` is changed through it. With `awq_device` (may be null),
// DeviceAwqLoss makes its evaluators there. Not thread-safe.
class DecoderBlockView final : public BlockView {
 public:
  DecoderBlockView(DecoderBlock* block, const CausalLm* lm, const std::map<std::string, GroupStats>* stats,
                   const QuantConfig* config, DType dtype, AwqDeviceLossFactory* awq_device = nullptr)
      : block_(block), lm_(lm), stats_(stats), config_(config), dtype_(dtype), awq_device_(awq_device) {}

  std::string prefix() const override;
  DType dtype() const override { return dtype_; }
  std::vector<LinearWeight*> linears() override { return block_->linears(); }
  std::vector<std::pair<std::string, std::vector<float>*>> norms() override;
  float norm_offset() const override { return lm_->spec().norm_offset; }
  std::optional<InputStatistics> input_statistics(const std::string& module) const override;
  const ConfigGroup* weight_group(const std::string& module) const override;
  bool IsRouter(const std::string& module) const override;
  bool IsExpert(const std::string& module) const override;
  // FAILED_PRECONDITION when balance[0]'s input has no captured tokens; INVALID_ARGUMENT when a weight's size is
  // not its Linear's, or when balance[0] is an expert's gate/up (the parent of those is the whole MoE MLP, whose
  // search needs the router first among the balance layers).
  absl::Status ParentForward(absl::Span<LinearWeight* const> balance,
                             absl::Span<const std::vector<float>* const> weights, std::vector<float>* out) override;
  // The awq_device factory's evaluator for the parent ParentForward runs (null without a factory, or when it
  // declines). The evaluator reads the block and the captured inputs: valid while this view is.
  absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> DeviceAwqLoss(absl::Span<LinearWeight* const> balance) override;

 private:
  // The parent of `balance` (see AwqParent), its input and its members; errors as ParentForward's.
  absl::StatusOr<AwqParent> ResolveParent(absl::Span<LinearWeight* const> balance) const;
  // A Linear of the parent with the weight values it runs with.
  struct Operand {
    const LinearWeight* linear;
    const float* weight;  // [out, in]
  };
  // Attention on normed inputs n [seqs * T, H] with the given q, k, v (or fused qkv): o_proj's output.
  void AttentionOut(const std::vector<Operand>& qkv, const float* n, int64_t seqs, int64_t T, float* out) const;
  // The MLP on normed inputs m [rows, H] with the given gate, up (or fused gate_up): down_proj's output.
  void MlpOut(const std::vector<Operand>& gate_up, const float* m, int64_t rows, float* out) const;
  // Whether `lw` is one of the MoE MLP's Linears (router, experts, shared expert).
  bool InMoeMlp(const LinearWeight* lw) const;
  // The MoE MLP (moe.h, RunMoeMlp) on m [rows, H] with balance[i]'s weight replaced by *weights[i] where given.
  absl::Status MoeOut(absl::Span<LinearWeight* const> balance, absl::Span<const std::vector<float>* const> weights,
                      const float* m, int64_t rows, float* out);

  DecoderBlock* block_;
  const CausalLm* lm_;
  // The parent forwards' intermediates, kept between calls: AWQ runs the same parent once per grid point, and fresh
  // buffers of that size cost more in page faults than the forward itself. A view serves one thread at a time.
  mutable struct {
    std::vector<float> q, k, v, attn, qkv, part, gu, g, u;
  } scratch_;
  const std::map<std::string, GroupStats>* stats_;
  const QuantConfig* config_;
  DType dtype_;
  AwqDeviceLossFactory* awq_device_;
};

}  // namespace llmc
