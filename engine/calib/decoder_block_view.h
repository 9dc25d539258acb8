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
// gate_up_proj); mappings a recipe gives are kept.
// INVALID_ARGUMENT naming `modifier` when a mapping smooths a norm whose output does not feed the balance layers
// in this family (Gemma's post_attention_layernorm).
absl::StatusOr<std::vector<SmoothMapping>> FamilySmoothMappings(const std::vector<SmoothMapping>& mappings,
                                                                const ModelSpec& spec, const char* modifier);

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
  // FAILED_PRECONDITION when balance[0]'s input has no captured tokens; INVALID_ARGUMENT when a weight's size is
  // not its Linear's.
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

  DecoderBlock* block_;
  const CausalLm* lm_;
  const std::map<std::string, GroupStats>* stats_;
  const QuantConfig* config_;
  DType dtype_;
  AwqDeviceLossFactory* awq_device_;
};

}  // namespace llmc
