#include "engine/algo/awq.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/model_dtype.h"

namespace llmc {
namespace {

// Round-to-nearest quantize-dequantize of `values` (w's shape) with w's weight scheme: AWQ's search objective.
absl::StatusOr<std::vector<float>> PseudoQuantize(const BlockView& block, const LinearWeight& w,
                                                  const std::vector<float>& values) {
  const ConfigGroup* grp = block.weight_group(w.name);
  if (grp == nullptr) return values;
  const DType dtype = block.dtype();
  auto bytes = ToDTypeBytes(values, dtype);
  WeightView view{w.name, bytes.data(), dtype, w.out_features, w.in_features};
  LLMC_ASSIGN_OR_RETURN(auto bufs, QuantizeWeight(view, *grp->scheme.weights, grp->format));
  return DequantizeWeight(w.out_features, w.in_features, dtype, *grp->scheme.weights, grp->format, bufs);
}

// The parent module of a Linear: its name less the leaf ("model.layers.0.mlp.experts.3." for its down_proj).
std::string ParentOf(const std::string& module) { return module.substr(0, module.size() - LinearLeaf(module).size()); }

}  // namespace

std::vector<AwqResolved> ResolveAwqMappings(const AwqParams& params, const std::vector<std::string>& norms,
                                            const std::vector<std::string>& linears,
                                            const std::vector<std::string>& routers) {
  std::vector<AwqResolved> out;
  for (const auto& m : params.mappings) {
    std::vector<std::string> balance;
    for (const std::string& name : linears) {
      bool ignored = false, named = false;
      for (const auto& i : params.ignore) ignored |= MatchesTarget(i, name);
      ignored &= std::find(routers.begin(), routers.end(), name) == routers.end();
      for (const auto& pat : m.balance) named |= MatchesTarget(pat, name);
      if (named && !ignored) balance.push_back(name);
    }
    if (balance.empty()) continue;
    const std::string* norm = nullptr;
    for (const std::string& n : norms)
      if (MatchesTarget(m.smooth, n)) {
        norm = &n;
        break;
      }
    if (norm) {
      out.push_back({m.smooth, *norm, true, balance});
      continue;
    }
    std::vector<std::string> smooth;
    for (const std::string& name : linears)
      if (MatchesTarget(m.smooth, name)) smooth.push_back(name);
    if (smooth.empty()) continue;
    // Several smooth Linears (one up_proj per expert): each with the balance Linears of its own parent module.
    std::vector<AwqResolved> sets;
    if (smooth.size() > 1)
      for (const std::string& sm : smooth) {
        AwqResolved r{m.smooth, sm, false, {}};
        for (const std::string& b : balance)
          if (ParentOf(b) == ParentOf(sm)) r.balance.push_back(b);
        if (!r.balance.empty()) sets.push_back(std::move(r));
      }
    if (sets.empty()) sets.push_back({m.smooth, smooth.back(), false, balance});
    for (auto& r : sets) out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> AwqInputs(const AwqParams& params, const std::vector<std::string>& norms,
                                   const std::vector<std::string>& linears, const std::vector<std::string>& routers) {
  std::vector<std::string> out;
  for (const AwqResolved& r : ResolveAwqMappings(params, norms, linears, routers)) out.push_back(r.balance[0]);
  return out;
}

absl::StatusOr<std::vector<AwqChoice>> ApplyAwq(const AwqParams& params, BlockView* block) {
  const DType dtype = block->dtype();
  std::vector<AwqChoice> chosen;
  std::map<std::string, LinearWeight*> by_name;
  std::vector<std::string> linear_names, norm_names, routers;
  for (LinearWeight* lw : block->linears()) {
    by_name[lw->name] = lw;
    linear_names.push_back(lw->name);
    if (block->IsRouter(lw->name)) routers.push_back(lw->name);
  }
  std::map<std::string, std::vector<float>*> norm_by_name;
  for (const auto& [name, norm] : block->norms()) {
    norm_by_name[name] = norm;
    norm_names.push_back(name);
  }
  for (const AwqResolved& m : ResolveAwqMappings(params, norm_names, linear_names, routers)) {
    std::vector<LinearWeight*> balance;
    for (const std::string& b : m.balance) balance.push_back(by_name.at(b));
    std::vector<float>* smooth_norm = m.smooth_is_norm ? norm_by_name.at(m.smooth) : nullptr;
    LinearWeight* smooth_linear = m.smooth_is_norm ? nullptr : by_name.at(m.smooth);
    const int64_t cols = balance[0]->in_features;
    // The smooth Linear's output rows that the balance layers read: all of them, or for the fused Linears the
    // last `cols` (v of qkv_proj when q and v have one width, up of gate_up_proj), as llm-compressor scales them.
    // Anything else (v_proj -> o_proj or qkv_proj -> o_proj under GQA) cannot be smoothed and is skipped.
    int64_t row0 = 0;
    if (smooth_linear && smooth_linear->out_features != cols) {
      const std::string leaf = LinearLeaf(smooth_linear->name);
      const bool fused_tail = (leaf == "qkv_proj" && smooth_linear->out_features == 3 * cols) ||
                              (leaf == "gate_up_proj" && smooth_linear->out_features == 2 * cols);
      if (!fused_tail) continue;
      row0 = smooth_linear->out_features - cols;
    }
    // Every balance Linear quantized, or a router (scaled only); at least one quantized.
    std::vector<bool> quantized(balance.size());
    const ConfigGroup* first_group = nullptr;
    bool resolvable = true;
    for (size_t b = 0; b < balance.size(); ++b) {
      const ConfigGroup* g = block->weight_group(balance[b]->name);
      quantized[b] = g != nullptr;
      if (g && !first_group) first_group = g;
      resolvable &= g != nullptr || block->IsRouter(balance[b]->name);
    }
    if (!resolvable || !first_group) continue;
    const std::optional<InputStatistics> st = block->input_statistics(balance[0]->name);
    if ((!st || st->tokens == 0) && block->IsExpert(balance[0]->name)) continue;  // routed-only: no token chose it
    if (!st || st->tokens == 0 || st->captured_tokens == 0)
      return absl::FailedPreconditionError(
          absl::StrCat(balance[0]->name, ": saw no calibration tokens; AWQ cannot scale it"));
    // x_mean and w_mean.
    std::vector<double> x_mean(cols), w_mean(cols, 0.0);
    for (int64_t c = 0; c < cols; ++c) x_mean[c] = st->channel_abs_sum[c] / static_cast<double>(st->tokens);
    const QuantArgs& wa = *first_group->scheme.weights;
    const int64_t gsz = wa.group_size && *wa.group_size > 0 ? *wa.group_size : cols;
    int64_t wrows = 0;
    for (size_t bi = 0; bi < balance.size(); ++bi) {
      if (!quantized[bi]) continue;  // a router: not in the means (llm-compressor skips a layer without a scheme)
      const LinearWeight* b = balance[bi];
      for (int64_t r = 0; r < b->out_features; ++r)
        for (int64_t g = 0; g < cols; g += gsz) {
          const float* row = b->weight.data() + r * cols + g;
          float amax = 0;
          for (int64_t c = 0; c < gsz && g + c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
          for (int64_t c = 0; c < gsz && g + c < cols; ++c) w_mean[g + c] += std::fabs(row[c]) / (amax + 1e-6);
        }
      wrows += b->out_features;
    }
    for (double& v : w_mean) v /= static_cast<double>(wrows);
    // The parent's output with the block's weights, then with each grid point's.
    std::vector<float> reference;
    const std::vector<const std::vector<float>*> as_held(balance.size(), nullptr);
    LLMC_RETURN_IF_ERROR(block->ParentForward(balance, as_held, &reference));
    double best = INFINITY, initial = NAN;
    int best_i = -1;
    std::vector<float> best_s;
    std::vector<float> s(cols);
    std::vector<std::vector<float>> trial(balance.size());
    std::vector<const std::vector<float>*> trial_ptrs(balance.size());
    for (size_t b = 0; b < balance.size(); ++b) trial_ptrs[b] = quantized[b] ? &trial[b] : nullptr;  // routers as held
    std::vector<float> out;
    for (int i = 0; i < params.n_grid; ++i) {
      const double ratio = static_cast<double>(i) / params.n_grid;
      double mx = 0, mn = INFINITY;
      for (int64_t c = 0; c < cols; ++c) {
        double v = params.duo_scaling ? std::pow(x_mean[c], ratio) / (std::pow(w_mean[c], 1 - ratio) + 1e-4)
                                      : std::pow(x_mean[c], ratio);
        v = std::max(v, 1e-4);
        s[c] = static_cast<float>(v);
        mx = std::max(mx, v);
        mn = std::min(mn, v);
      }
      const float norm = static_cast<float>(std::sqrt(mx * mn));
      for (float& v : s) v /= norm;
      for (size_t b = 0; b < balance.size(); ++b) {
        if (!quantized[b]) continue;
        std::vector<float> scaled(balance[b]->weight.size());
        for (int64_t r = 0; r < balance[b]->out_features; ++r)
          for (int64_t c = 0; c < cols; ++c) scaled[r * cols + c] = balance[b]->weight[r * cols + c] * s[c];
        LLMC_ASSIGN_OR_RETURN(auto q, PseudoQuantize(*block, *balance[b], scaled));
        for (int64_t r = 0; r < balance[b]->out_features; ++r)
          for (int64_t c = 0; c < cols; ++c) q[r * cols + c] /= s[c];
        trial[b] = std::move(q);
      }
      LLMC_RETURN_IF_ERROR(block->ParentForward(balance, trial_ptrs, &out));
      double loss = 0;
      for (size_t k = 0; k < out.size(); ++k) {
        double d = static_cast<double>(out[k]) - reference[k];
        loss += d * d;
      }
      loss /= static_cast<double>(out.size());
      if (i == 0) initial = loss;
      if (loss < best) {
        best = loss;
        best_i = i;
        best_s = s;
      }
    }
    if (best_i < 0 || !std::isfinite(best))
      return absl::InvalidArgumentError(
          absl::StrCat(balance[0]->name, ": AWQ found no finite loss; NaN or Inf in activations"));
    // Apply: smooth /= s (norm weight, or output rows and bias of a Linear), balance *= s.
    if (smooth_norm) {
      const float off = block->norm_offset();  // the stored value (scale - offset) is what is rounded
      for (int64_t c = 0; c < cols; ++c)
        (*smooth_norm)[c] = RoundToDType((*smooth_norm)[c] / best_s[c] - off, dtype) + off;
    } else {
      const int64_t in = smooth_linear->in_features;
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t r = row0 + j;
        for (int64_t c = 0; c < in; ++c)
          smooth_linear->weight[r * in + c] = RoundToDType(smooth_linear->weight[r * in + c] / best_s[j], dtype);
        if (!smooth_linear->bias.empty())
          smooth_linear->bias[r] = RoundToDType(smooth_linear->bias[r] / best_s[j], dtype);
      }
    }
    for (LinearWeight* b : balance)
      for (int64_t r = 0; r < b->out_features; ++r)
        for (int64_t c = 0; c < cols; ++c)
          b->weight[r * cols + c] = RoundToDType(b->weight[r * cols + c] * best_s[c], dtype);
    chosen.push_back({smooth_norm ? m.target : smooth_linear->name, balance[0]->name,
                      static_cast<double>(best_i) / params.n_grid, best, initial});
  }
  return chosen;
}

}  // namespace llmc
