#include "engine/algo/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/tensor/model_dtype.h"

namespace llmc {

std::vector<std::string> SmoothQuantInputs(const SmoothQuantParams& params, const std::vector<std::string>& linears) {
  std::vector<std::string> out;
  for (const auto& m : params.mappings)
    for (const std::string& name : linears)
      for (const auto& pat : m.balance)
        if (MatchesTarget(pat, name)) out.push_back(name);
  return out;
}

absl::Status ApplySmoothQuant(const SmoothQuantParams& params, BlockView* block) {
  const double alpha = params.smoothing_strength;
  const std::string p = block->prefix();
  const DType dtype = block->dtype();
  for (const auto& m : params.mappings) {
    std::vector<float>* smooth = nullptr;
    std::string smooth_name;
    for (const auto& [n, v] : block->norms())
      if (MatchesTarget(m.smooth, n)) {
        smooth = v;
        smooth_name = n;
      }
    std::vector<LinearWeight*> balance;
    for (LinearWeight* lw : block->linears()) {
      bool ignored = false;
      for (const auto& i : params.ignore) ignored |= MatchesTarget(i, lw->name);
      if (ignored) continue;
      for (const auto& pat : m.balance)
        if (MatchesTarget(pat, lw->name)) balance.push_back(lw);
    }
    if (!smooth || balance.empty()) continue;
    if (smooth_name == p + "input_layernorm" && InputGroup(balance[0]->name) != p + "self_attn.qkv")
      return absl::InvalidArgumentError(
          absl::StrCat("SmoothQuantModifier mapping ", m.smooth, ": balance layers must read the norm's output"));
    const std::optional<InputStatistics> st = block->input_statistics(balance[0]->name);
    if (!st || st->channel_max.empty()) continue;
    const int64_t cols = balance[0]->in_features;
    std::vector<float> wmax(cols, 0.0f);
    for (const LinearWeight* b : balance)
      for (int64_t r = 0; r < b->out_features; ++r)
        for (int64_t c = 0; c < cols; ++c) wmax[c] = std::max(wmax[c], std::fabs(b->weight[r * cols + c]));
    std::vector<float> s(cols);
    for (int64_t c = 0; c < cols; ++c) {
      double a = st->channel_max[c], w = wmax[c];
      double v = w > 0 ? std::pow(a, alpha) / std::pow(w, 1 - alpha) : a;
      if (!(v > 0) || !std::isfinite(v)) v = 1.0;
      s[c] = static_cast<float>(v);
    }
    for (LinearWeight* b : balance)
      for (int64_t r = 0; r < b->out_features; ++r)
        for (int64_t c = 0; c < cols; ++c) b->weight[r * cols + c] *= s[c];
    for (int64_t c = 0; c < cols; ++c) (*smooth)[c] /= s[c];
    // The stored norm and weights are rounded to the model dtype; run with what is stored.
    const float off = block->norm_offset();  // the stored value (scale - offset) is what is rounded
    for (float& v : *smooth) v = RoundToDType(v - off, dtype) + off;
    for (LinearWeight* b : balance)
      for (float& v : b->weight) v = RoundToDType(v, dtype);
  }
  return absl::OkStatus();
}

}  // namespace llmc
