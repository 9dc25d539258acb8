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

absl::StatusOr<std::vector<AwqGridPoint>> AwqGrid(int n_grid, bool duo_scaling, bool both) {
  std::vector<AwqGridPoint> grid;
  if (both) {
    const int n = n_grid / 2;
    if (n < 2)
      return absl::InvalidArgumentError(absl::StrCat("AWQModifier.n_grid ", n_grid,
                                                     " is too small with duo_scaling: both: the grid is n_grid / 2 "
                                                     "ratios i / (n_grid / 2 - 1), each without and with duo scaling; "
                                                     "use n_grid >= 4"));
    for (int i = 0; i < n; ++i)
      for (bool duo : {false, true}) grid.push_back({static_cast<double>(i) / (n - 1), duo});
  } else if (duo_scaling) {
    if (n_grid < 3)
      return absl::InvalidArgumentError(absl::StrCat("AWQModifier.n_grid ", n_grid,
                                                     " is too small with duo_scaling: the grid is the identity plus "
                                                     "n_grid - 1 ratios i / (n_grid - 2); use n_grid >= 3"));
    grid.push_back({0.0, false});
    for (int i = 0; i < n_grid - 1; ++i) grid.push_back({static_cast<double>(i) / (n_grid - 2), true});
  } else {
    if (n_grid < 2)
      return absl::InvalidArgumentError(absl::StrCat("AWQModifier.n_grid ", n_grid,
                                                     " is too small: the grid is i / (n_grid - 1); use n_grid >= 2"));
    for (int i = 0; i < n_grid; ++i) grid.push_back({static_cast<double>(i) / (n_grid - 1), false});
  }
  return grid;
}

absl::StatusOr<std::vector<double>> AwqWeightMeans(absl::Span<const LinearWeight* const> weights,
                                                   const QuantArgs& args, DType dtype) {
  if (weights.empty()) return absl::InvalidArgumentError("AwqWeightMeans needs at least one weight");
  const int64_t cols = weights[0]->in_features;
  std::vector<double> sum(cols, 0.0);
  int64_t rows_total = 0;
  for (const LinearWeight* w : weights) {
    if (w->in_features != cols)
      return absl::InvalidArgumentError(absl::StrCat(w->name, ": ", w->in_features, " input features, the first balance Linear ",
                                                     cols, "; AWQ balances Linears that read one input"));
    const int64_t rows = w->out_features;
    // The chunk that shares one amax: a group of a row, a whole row, a block of rows and columns (edge blocks
    // partial, as the block quantizer takes them) or the whole tensor.
    int64_t chunk_rows = 1, chunk_cols = cols;
    switch (args.strategy) {
      case Strategy::kGroup:
      case Strategy::kTensorGroup:
        chunk_cols = args.group_size.value_or(0);
        if (chunk_cols <= 0 || cols % chunk_cols != 0)
          return absl::InvalidArgumentError(absl::StrCat(w->name, ": in_features ", cols, " is not divisible by group_size ",
                                                         chunk_cols, "; AWQ needs whole groups"));
        break;
      case Strategy::kChannel:
        break;
      case Strategy::kTensor:
        chunk_rows = rows;
        break;
      case Strategy::kBlock:
        if (!args.block_structure || (*args.block_structure)[0] < 1 || (*args.block_structure)[1] < 1)
          return absl::InvalidArgumentError(absl::StrCat(w->name, ": the block strategy needs a block_structure"));
        chunk_rows = (*args.block_structure)[0];
        chunk_cols = (*args.block_structure)[1];
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(w->name, ": AWQ's weight means support the tensor, channel, "
                                                       "group, tensor_group and block strategies, not ",
                                                       StrategyName(args.strategy)));
    }
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows)
      for (int64_t c0 = 0; c0 < cols; c0 += chunk_cols) {
        const int64_t r1 = std::min(rows, r0 + chunk_rows), c1 = std::min(cols, c0 + chunk_cols);
        float amax = 0.0f;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w->weight[r * cols + c]));
        // |w|.div_(amax + 1e-6) in the model dtype: the divisor and each quotient rounded to it.
        const float d = RoundToDType(amax + 1e-6f, dtype);
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) sum[c] += RoundToDType(std::fabs(w->weight[r * cols + c]) / d, dtype);
      }
    rows_total += rows;
  }
  for (double& v : sum) v /= static_cast<double>(rows_total);
  return sum;
}

std::vector<double> AwqScales(absl::Span<const double> x_mean, absl::Span<const double> w_mean,
                              const AwqGridPoint& point) {
  const size_t cols = x_mean.size();
  std::vector<double> s(cols);
  double mx = -INFINITY, mn = INFINITY;
  for (size_t c = 0; c < cols; ++c) {
    double v = point.duo ? std::pow(x_mean[c], point.ratio) / (std::pow(w_mean[c], 1 - point.ratio) + 1e-4)
                         : std::pow(x_mean[c], point.ratio);
    v = std::max(v, 1e-4);  // clamp(min=1e-4); NaN stays NaN as in torch
    if (std::isnan(x_mean[c]) || (point.duo && std::isnan(w_mean[c]))) v = NAN;
    s[c] = v;
    mx = std::isnan(v) || std::isnan(mx) ? NAN : std::max(mx, v);
    mn = std::isnan(v) || std::isnan(mn) ? NAN : std::min(mn, v);
  }
  const double norm = std::sqrt(mx * mn);
  for (double& v : s) {
    v /= norm;
    if (!std::isfinite(v)) v = 1.0;
  }
  return s;
}

absl::StatusOr<std::vector<float>> AwqTrialWeight(const std::string& module, const std::vector<float>& w, int64_t rows,
                                                  int64_t cols, const ConfigGroup& group, DType dtype,
                                                  absl::Span<const double> s, std::optional<float> global_scale) {
  if (static_cast<int64_t>(w.size()) != rows * cols || static_cast<int64_t>(s.size()) != cols)
    return absl::InvalidArgumentError(absl::StrCat(module, ": AwqTrialWeight got ", w.size(), " weights and ", s.size(),
                                                   " scales for [", rows, ", ", cols, "]"));
  std::vector<float> scaled(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) scaled[r * cols + c] = static_cast<float>(w[r * cols + c] * s[c]);
  auto bytes = ToDTypeBytes(scaled, dtype);  // (W * s) copied into the model-dtype weight
  WeightView view{module, bytes.data(), dtype, rows, cols};
  // The library swaps the weight observer for memoryless_minmax during the search, whatever the scheme's.
  QuantArgs args = *group.scheme.weights;
  args.observer = "memoryless_minmax";
  args.observer_kwargs = nlohmann::json::object();
  LLMC_ASSIGN_OR_RETURN(auto bufs, QuantizeWeight(view, args, group.format, global_scale));
  LLMC_ASSIGN_OR_RETURN(auto q, DequantizeWeight(rows, cols, dtype, args, group.format, bufs));
  // The library dequantizes in the model dtype ((q - zp) * scale rounded to it), divides by the fp64 scales and
  // stores the quotient in the model dtype.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      q[r * cols + c] = RoundToDType(static_cast<float>(RoundToDType(q[r * cols + c], dtype) / s[c]), dtype);
  return q;
}

namespace {

// AWQ's loss on the host: AwqTrialWeight of every balance Linear, BlockView::ParentForward, the MSE against the
// output with the weights as held.
class HostAwqLoss final : public AwqLossEvaluator {
 public:
  // `quantized[b]`: balance Linear b gets trial weights; a router (false) runs as held (its input, the norm's
  // output, is the one captured before smoothing, so the routing stays as it is).
  static absl::StatusOr<std::unique_ptr<HostAwqLoss>> Create(BlockView* block, absl::Span<LinearWeight* const> balance,
                                                             const std::vector<bool>& quantized) {
    std::unique_ptr<HostAwqLoss> l(new HostAwqLoss(block, balance, quantized));
    const std::vector<const std::vector<float>*> as_held(balance.size(), nullptr);
    LLMC_RETURN_IF_ERROR(block->ParentForward(balance, as_held, &l->reference_));
    return l;
  }

  absl::StatusOr<double> Loss(absl::Span<const double> s) override {
    LLMC_ASSIGN_OR_RETURN(const auto global, FusedGlobalScales(s));
    for (size_t b = 0; b < balance_.size(); ++b) {
      if (!quantized_[b]) continue;
      const LinearWeight& w = *balance_[b];
      std::optional<float> gs;
      if (auto it = global.find(InputGroup(w.name)); it != global.end()) gs = it->second;
      LLMC_ASSIGN_OR_RETURN(trial_[b], AwqTrialWeight(w.name, w.weight, w.out_features, w.in_features,
                                                      *block_->weight_group(w.name), block_->dtype(), s, gs));
    }
    LLMC_RETURN_IF_ERROR(block_->ParentForward(balance_, trial_ptrs_, &out_));
    if (out_.size() != reference_.size()) return absl::InternalError("ParentForward changed its output size");
    double loss = 0;
    for (size_t k = 0; k < out_.size(); ++k) {
      const double d = static_cast<double>(out_[k]) - reference_[k];
      loss += d * d;
    }
    return loss / static_cast<double>(out_.size());
  }

 private:
  static bool FusesGlobalScale(const ConfigGroup* g) {
    return g && g->scheme.weights && g->scheme.weights->is_fp4() && g->scheme.weights->strategy == Strategy::kTensorGroup;
  }
  // NVFP4's global scale of each fused input group (q/k/v, gate/up) holding a balance Linear, over the trial's W s
  // of the balance Linears and the weights as held of the group's other members, as the library's fused observers
  // see them in the search. Empty for other schemes.
  absl::StatusOr<std::map<std::string, float>> FusedGlobalScales(absl::Span<const double> s) {
    std::map<std::string, float> amax;
    const DType dtype = block_->dtype();
    for (size_t b = 0; b < balance_.size(); ++b) {
      if (!quantized_[b] || !FusesGlobalScale(block_->weight_group(balance_[b]->name))) continue;
      const LinearWeight& w = *balance_[b];
      float& a = amax[InputGroup(w.name)];
      for (int64_t r = 0; r < w.out_features; ++r)
        for (int64_t c = 0; c < w.in_features; ++c)
          a = std::max(a, std::fabs(RoundToDType(static_cast<float>(w.weight[r * w.in_features + c] * s[c]), dtype)));
    }
    if (amax.empty()) return amax;
    for (const LinearWeight* lw : block_->linears()) {
      auto it = amax.find(InputGroup(lw->name));
      if (it == amax.end() || std::find(balance_.begin(), balance_.end(), lw) != balance_.end() ||
          !FusesGlobalScale(block_->weight_group(lw->name)))
        continue;
      for (float v : lw->weight) it->second = std::max(it->second, std::fabs(RoundToDType(v, dtype)));
    }
    std::map<std::string, float> out;
    for (const auto& [group, a] : amax) {
      if (!std::isfinite(a)) return absl::InvalidArgumentError(absl::StrCat(group, ": weight contains NaN or Inf"));
      out[group] = NvFp4GlobalScale(a, dtype);
    }
    return out;
  }

  HostAwqLoss(BlockView* block, absl::Span<LinearWeight* const> balance, const std::vector<bool>& quantized)
      : block_(block), balance_(balance.begin(), balance.end()), quantized_(quantized), trial_(balance.size()) {
    for (size_t b = 0; b < trial_.size(); ++b) trial_ptrs_.push_back(quantized_[b] ? &trial_[b] : nullptr);
  }
  BlockView* block_;
  std::vector<LinearWeight*> balance_;
  std::vector<bool> quantized_;
  std::vector<std::vector<float>> trial_;
  std::vector<const std::vector<float>*> trial_ptrs_;
  std::vector<float> reference_, out_;
};

}  // namespace

absl::StatusOr<std::vector<AwqChoice>> ApplyAwq(const AwqParams& params, BlockView* block) {
  const DType dtype = block->dtype();
  LLMC_ASSIGN_OR_RETURN(const std::vector<AwqGridPoint> grid, AwqGrid(params.n_grid, params.duo_scaling, params.duo_scaling_both));
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
    std::vector<double> x_mean(cols);
    for (int64_t c = 0; c < cols; ++c) x_mean[c] = st->channel_abs_sum[c] / static_cast<double>(st->tokens);
    std::vector<double> w_mean;
    if (params.duo_scaling) {
      // Routers are scaled with the experts but carry no scheme: not in the means (llm-compressor skips a layer
      // without one).
      std::vector<const LinearWeight*> ws;
      for (size_t b = 0; b < balance.size(); ++b)
        if (quantized[b]) ws.push_back(balance[b]);
      LLMC_ASSIGN_OR_RETURN(w_mean, AwqWeightMeans(ws, *first_group->scheme.weights, dtype));
    }
    // The loss of every grid point, on the device when the view offers it (never with a router among the balance
    // layers: those parents search on the host).
    std::unique_ptr<AwqLossEvaluator> eval;
    if (std::all_of(quantized.begin(), quantized.end(), [](bool q) { return q; })) {
      LLMC_ASSIGN_OR_RETURN(eval, block->DeviceAwqLoss(balance));
    }
    const bool on_device = eval != nullptr;
    if (!eval) {
      LLMC_ASSIGN_OR_RETURN(auto host, HostAwqLoss::Create(block, balance, quantized));
      eval = std::move(host);
    }
    double best = INFINITY, initial = NAN;
    int best_i = -1;
    std::vector<double> best_s;
    for (size_t i = 0; i < grid.size(); ++i) {
      const std::vector<double> s = AwqScales(x_mean, w_mean, grid[i]);
      LLMC_ASSIGN_OR_RETURN(const double loss, eval->Loss(s));
      if (i == 0) initial = loss;
      if (loss < best) {
        best = loss;
        best_i = static_cast<int>(i);
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
        (*smooth_norm)[c] = RoundToDType(static_cast<float>((*smooth_norm)[c] / best_s[c]) - off, dtype) + off;
    } else {
      const int64_t in = smooth_linear->in_features;
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t r = row0 + j;
        for (int64_t c = 0; c < in; ++c)
          smooth_linear->weight[r * in + c] =
              RoundToDType(static_cast<float>(smooth_linear->weight[r * in + c] / best_s[j]), dtype);
        if (!smooth_linear->bias.empty())
          smooth_linear->bias[r] = RoundToDType(static_cast<float>(smooth_linear->bias[r] / best_s[j]), dtype);
      }
    }
    for (LinearWeight* b : balance)
      for (int64_t r = 0; r < b->out_features; ++r)
        for (int64_t c = 0; c < cols; ++c)
          b->weight[r * cols + c] = RoundToDType(static_cast<float>(b->weight[r * cols + c] * best_s[c]), dtype);
    chosen.push_back({smooth_norm ? m.target : smooth_linear->name, balance[0]->name, grid[best_i].ratio,
                      grid[best_i].duo, best, initial, on_device});
  }
  return chosen;
}

}  // namespace llmc
