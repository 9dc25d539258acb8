#include "engine/calib/calib_hooks.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/block_view.h"
#include "engine/model/attention_inputs.h"

namespace llmc {

absl::Status CalibHooks::OnInput(const LinearWeight& w, absl::Span<const float> input, int64_t tokens) {
  const std::string group = InputGroup(w.name);
  const bool repeat = input.data() == last_ptr_ && group == last_group_;
  last_ptr_ = input.data();
  last_group_ = group;
  if (wants_.kv) LLMC_RETURN_IF_ERROR(ObserveKv(w, input.data(), tokens));
  if (repeat) return absl::OkStatus();
  const int64_t cols = w.in_features;
  const float* x = input.data();
  const int64_t samples = seq_len_ > 0 ? std::max<int64_t>(1, tokens / seq_len_) : 1;
  GroupStats* st = nullptr;
  auto get = [&]() -> GroupStats& {
    if (!st) st = &stats_[group];
    return *st;
  };
  if (wants_.hessian.count(group) && !(on_device_ && wants_.device_hessian)) {
    GroupStats& s = get();
    if (!s.hessian) s.hessian = std::make_unique<HessianAccumulator>(cols);
    LLMC_RETURN_IF_ERROR(s.hessian->Add(x, tokens, samples));
  }
  if (wants_.row_norm.count(group)) {
    GroupStats& s = get();
    if (!s.row_norm) s.row_norm = std::make_unique<RowNormAccumulator>(cols);
    LLMC_RETURN_IF_ERROR(s.row_norm->Add(x, tokens, samples));
  }
  if (wants_.channel_max.count(group) || wants_.range.count(group)) {
    GroupStats& s = get();
    if (s.channel_max.empty()) s.channel_max.assign(cols, 0.0f);
    float mn = s.min, mx = s.max;
    bool finite = true;
    for (int64_t t = 0; t < tokens; ++t) {
      const float* r = x + t * cols;
      for (int64_t c = 0; c < cols; ++c) {
        float v = r[c];
        finite &= std::isfinite(v);
        s.channel_max[c] = std::max(s.channel_max[c], std::fabs(v));
        mn = std::min(mn, v);
        mx = std::max(mx, v);
      }
    }
    s.min = mn;
    s.max = mx;
    s.amax = std::max(-mn, mx);
    s.nonfinite |= !finite;
  }
  if (wants_.channel_mean.count(group)) {
    GroupStats& s = get();
    if (s.channel_abs_sum.empty()) s.channel_abs_sum.assign(cols, 0.0);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t c = 0; c < cols; ++c) s.channel_abs_sum[c] += std::fabs(x[t * cols + c]);
  }
  if (wants_.capture.count(group)) {
    GroupStats& s = get();
    if (s.captured_tokens == 0) s.captured_seq_len = seq_len_;
    if (s.captured_seq_len == seq_len_ && s.captured_tokens + tokens <= std::max(wants_.capture_tokens, seq_len_)) {
      s.captured.insert(s.captured.end(), x, x + tokens * cols);
      s.captured_tokens += tokens;
    }
  }
  if (st) st->tokens += tokens;
  return absl::OkStatus();
}

absl::Status CalibHooks::ObserveKv(const LinearWeight& w, const float* x, int64_t tokens) {
  const std::string leaf = LinearLeaf(w.name);
  if (leaf != "k_proj" && leaf != "v_proj") return absl::OkStatus();
  // The weights as the block holds them on the host (device hooks see a weight-less descriptor).
  const LinearWeight* lw = &w;
  for (const LinearWeight* b : block_->linears())
    if (b->name == w.name) lw = b;
  if (lw->weight.size() != static_cast<size_t>(lw->out_features * lw->in_features))
    return absl::InternalError(absl::StrCat(w.name, ": no host weights for the kv cache observer"));
  std::vector<float> y(tokens * lw->out_features);
  LinearForward(x, tokens, lw->in_features, lw->weight.data(), lw->bias.empty() ? nullptr : lw->bias.data(),
                lw->out_features, y.data(), ctx_);
  if (leaf == "k_proj")  // k as the cache stores it (the block's forward pass, decoder_block.cc)
    PrepareQueriesAndKeys(spec_, block_->layer, nullptr, block_->k_norm.data(), *rope_, tokens / seq_len_, seq_len_,
                          nullptr, y.data(), ctx_);
  float a = 0;
  for (float v : y) a = std::max(a, std::fabs(v));
  if (!std::isfinite(a))
    return absl::InvalidArgumentError(absl::StrCat(w.name, ": NaN or Inf in the calibration activations"));
  (leaf == "k_proj" ? k_amax_ : v_amax_) = std::max(leaf == "k_proj" ? k_amax_ : v_amax_, a);
  return absl::OkStatus();
}

}  // namespace llmc
