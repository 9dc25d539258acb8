#include "engine/calib/stored_block.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/model_dtype.h"

namespace llmc {
namespace {

// The values a stored quantized weight stands for, rounded to its dtype (as the solver propagated them).
absl::StatusOr<std::vector<float>> DequantizeStored(const LinearWeight& lw, DType wd, const QuantArgs& wa,
                                                    const std::string& format,
                                                    const std::vector<std::vector<uint8_t>>& bufs,
                                                    const std::vector<int32_t>& g_idx) {
  LLMC_ASSIGN_OR_RETURN(auto deq, DequantizeWeight(lw.out_features, lw.in_features, wd, wa, format, bufs,
                                                   g_idx.empty() ? nullptr : g_idx.data()));
  for (float& v : deq) v = RoundToDType(v, wd);
  return deq;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DecoderBlock>> LoadStoredBlock(const CausalLm& lm, const QuantConfig& config,
                                                              DType model_dtype, int layer,
                                                              const ReadBackFn& read_back) {
  LLMC_ASSIGN_OR_RETURN(std::unique_ptr<DecoderBlock> block, lm.LoadBlock(layer));
  const std::string p = lm.spec().layout.LayerPrefix(layer);
  auto floats = [&](const std::string& name, DType dtype, std::vector<float>* out) -> absl::Status {
    LLMC_ASSIGN_OR_RETURN(auto bytes, read_back(name));
    if (bytes.size() != out->size() * DTypeSize(dtype))
      return absl::InternalError(absl::StrCat(name, ": staged size does not match"));
    for (size_t i = 0; i < out->size(); ++i) (*out)[i] = LoadAsFloat(bytes.data(), dtype, i);
    return absl::OkStatus();
  };
  auto tensor_dtype = [&](const std::string& name) {
    const ModelTensor* t = lm.dir().Find(name);
    return t ? t->info->dtype : model_dtype;
  };
  // Norms as emitted (smoothing may have changed them), held as the effective scale (+ the family's offset).
  std::vector<std::pair<std::string, std::vector<float>*>> norms = {
      {p + "input_layernorm.weight", &block->input_norm},
      {p + "post_attention_layernorm.weight", &block->post_attention_norm}};
  if (!block->pre_feedforward_norm.empty())
    norms.push_back({p + "pre_feedforward_layernorm.weight", &block->pre_feedforward_norm});
  for (auto& [name, v] : norms) {
    LLMC_RETURN_IF_ERROR(floats(name, tensor_dtype(name), v));
    for (float& x : *v) x += lm.spec().norm_offset;
  }
  for (LinearWeight* lw : block->linears()) {
    const DType wd = tensor_dtype(lw->name + ".weight");
    if (!lw->bias.empty()) LLMC_RETURN_IF_ERROR(floats(lw->name + ".bias", tensor_dtype(lw->name + ".bias"), &lw->bias));
    int g = config.Match(lw->name, "Linear");
    if (g < 0 || !config.groups()[g].scheme.weights) {
      LLMC_RETURN_IF_ERROR(floats(lw->name + ".weight", wd, &lw->weight));
      continue;
    }
    const ConfigGroup& grp = config.groups()[g];
    const QuantArgs& wa = *grp.scheme.weights;
    LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight(lw->name, lw->out_features, lw->in_features, wd, wa, grp.format));
    std::vector<std::vector<uint8_t>> bufs;
    for (const auto& o : plan) {
      LLMC_ASSIGN_OR_RETURN(auto b, read_back(absl::StrCat(lw->name, ".", o.suffix)));
      bufs.push_back(std::move(b));
    }
    std::vector<int32_t> g_idx;
    if (auto gi = read_back(lw->name + ".weight_g_idx"); gi.ok()) {
      g_idx.resize(lw->in_features);
      std::memcpy(g_idx.data(), gi->data(), std::min<size_t>(gi->size(), g_idx.size() * 4));
    }
    LLMC_ASSIGN_OR_RETURN(lw->weight, DequantizeStored(*lw, wd, wa, grp.format, bufs, g_idx));
  }
  return block;
}

}  // namespace llmc
