#include "engine/model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/cpu_ops.h"

namespace llmc {

namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

// A positive integer key (the first of `keys` present), or `dflt` when none is and dflt > 0.
absl::StatusOr<int64_t> PositiveInt(const json& j, std::initializer_list<const char*> keys, int64_t dflt,
                                    absl::string_view source) {
  for (const char* key : keys) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() <= 0)
      return Invalid(source, absl::StrCat("'", key, "' must be a positive integer"));
    return it->get<int64_t>();
  }
  if (dflt > 0) return dflt;
  return Invalid(source, absl::StrCat("mixture-of-experts config needs '", *keys.begin(), "'"));
}

}  // namespace

absl::StatusOr<MoeSpec> ResolveMoeSpec(MoeStyle style, bool shared_expert, const json& config,
                                       int64_t num_layers, int64_t intermediate_size,
                                       absl::string_view source) {
  MoeSpec m;
  m.style = style;
  if (style == MoeStyle::kNone) return m;
  LLMC_ASSIGN_OR_RETURN(m.num_experts, PositiveInt(config, {"num_local_experts", "num_experts"}, 0, source));
  LLMC_ASSIGN_OR_RETURN(m.top_k, PositiveInt(config, {"num_experts_per_tok"}, 0, source));
  if (m.top_k > m.num_experts)
    return Invalid(source,
                   absl::StrCat("num_experts_per_tok ", m.top_k, " exceeds the ", m.num_experts, " experts"));
  for (const char* key : {"router_jitter_noise", "moe_jitter_eps"}) {
    auto it = config.find(key);
    if (it != config.end() && it->is_number() && it->get<double>() != 0.0)
      return absl::UnimplementedError(absl::StrCat(source, ": ", key,
                                                   " (router noise) is not supported by the ",
                                                   "llmc model runtime (evaluation has none); set it to 0"));
  }
  m.sparse_layers.assign(num_layers, true);
  if (style == MoeStyle::kLlama4) {
    // Llama4TextConfig: the routed and the shared experts have intermediate_size (the dense layers
    // intermediate_size_mlp); the sparse layers are moe_layers, by default every interleave_moe_layer_step-th.
    LLMC_ASSIGN_OR_RETURN(m.expert_intermediate, PositiveInt(config, {"intermediate_size"}, 0, source));
    m.shared_intermediate = m.expert_intermediate;
    auto layers = config.find("moe_layers");
    if (layers != config.end() && !layers->is_null()) {
      if (!layers->is_array()) return Invalid(source, "'moe_layers' must be a list of layer indices");
      m.sparse_layers.assign(num_layers, false);
      for (const auto& v : *layers) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= num_layers)
          return Invalid(source, absl::StrCat("moe_layers: ", v.dump(), " is not a layer index in [0, ", num_layers, ")"));
        m.sparse_layers[v.get<int64_t>()] = true;
      }
    } else {
      LLMC_ASSIGN_OR_RETURN(int64_t step, PositiveInt(config, {"interleave_moe_layer_step"}, 1, source));
      for (int64_t l = 0; l < num_layers; ++l) m.sparse_layers[l] = (l + 1) % step == 0;
    }
    return m;
  }
  if (style == MoeStyle::kMixtral) {
    m.expert_intermediate = intermediate_size;
    m.norm_topk_prob = true;  // MixtralTopKRouter always renormalizes the top-k weights
    return m;
  }
  LLMC_ASSIGN_OR_RETURN(m.expert_intermediate, PositiveInt(config, {"moe_intermediate_size"}, 0, source));
  auto norm = config.find("norm_topk_prob");
  if (norm != config.end() && !norm->is_null()) {
    if (!norm->is_boolean()) return Invalid(source, "'norm_topk_prob' must be true or false");
    m.norm_topk_prob = norm->get<bool>();
  }
  LLMC_ASSIGN_OR_RETURN(int64_t step, PositiveInt(config, {"decoder_sparse_step"}, 1, source));
  std::vector<bool> dense(num_layers, false);
  auto only = config.find("mlp_only_layers");
  if (only != config.end() && !only->is_null()) {
    if (!only->is_array()) return Invalid(source, "'mlp_only_layers' must be a list of layer indices");
    for (const auto& v : *only) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= num_layers)
        return Invalid(source, absl::StrCat("mlp_only_layers: ", v.dump(), " is not a layer index in [0, ",
                                            num_layers, ")"));
      dense[v.get<int64_t>()] = true;
    }
  }
  // Qwen3MoeDecoderLayer / Qwen2MoeDecoderLayer: sparse when not in mlp_only_layers and (layer + 1) % step ==
  // 0.
  for (int64_t l = 0; l < num_layers; ++l) m.sparse_layers[l] = !dense[l] && (l + 1) % step == 0;
  if (shared_expert) {
    LLMC_ASSIGN_OR_RETURN(m.shared_intermediate,
                          PositiveInt(config, {"shared_expert_intermediate_size"}, 0, source));
  }
  return m;
}

std::string MoeRouterName(MoeStyle style, absl::string_view layer_prefix) {
  return absl::StrCat(layer_prefix, style == MoeStyle::kMixtral  ? "block_sparse_moe.gate"
                                    : style == MoeStyle::kLlama4 ? "feed_forward.router"
                                                                 : "mlp.gate");
}

std::string MoeExpertName(MoeStyle style, absl::string_view layer_prefix, int64_t expert, const char* which) {
  const absl::string_view w = which;
  if (style == MoeStyle::kMixtral)
    return absl::StrCat(layer_prefix, "block_sparse_moe.experts.", expert, ".",
                        w == "gate" ? "w1"
                        : w == "up" ? "w3"
                                    : "w2");
  return absl::StrCat(layer_prefix, style == MoeStyle::kLlama4 ? "feed_forward" : "mlp", ".experts.", expert, ".",
                      which, "_proj");
}

std::string MoeSharedName(absl::string_view layer_prefix, const char* which, MoeStyle style) {
  const char* mlp = style == MoeStyle::kLlama4 ? "feed_forward" : "mlp";
  if (absl::string_view(which) == "gate_weight") return absl::StrCat(layer_prefix, mlp, ".shared_expert_gate");
  return absl::StrCat(layer_prefix, mlp, ".shared_expert.", which, "_proj");
}

std::string MoeFusedExpertsName(absl::string_view layer_prefix, const char* which) {
  return absl::StrCat(layer_prefix, "feed_forward.experts.", which);
}

const std::vector<std::string>& MoeRouterIgnorePatterns() {
  static const std::vector<std::string> kPatterns = {"re:.*mlp\\.gate$", "re:.*block_sparse_moe\\.gate$",
                                                     "re:.*shared_expert_gate$", "re:.*mlp\\.router$",
                                                     "re:.*feed_forward\\.router$"};
  return kPatterns;
}

bool IsMoeRouter(absl::string_view module) {
  for (absl::string_view suffix :
       {".mlp.gate", ".block_sparse_moe.gate", ".shared_expert_gate", ".mlp.router", ".feed_forward.router"})
    if (absl::EndsWith(module, suffix)) return true;
  return false;
}

float SharedExpertScale(float gate_logit) { return 1.0f / (1.0f + std::exp(-gate_logit)); }

MoeRouting RouteTokens(const MoeSpec& spec, const float* logits, int64_t rows) {
  const int64_t E = spec.num_experts, K = spec.top_k;
  MoeRouting r;
  r.tokens.resize(E);
  r.weights.resize(E);
  std::vector<float> p(E);
  std::vector<int32_t> order(E);
  if (spec.style == MoeStyle::kLlama4) {
    // Llama4Router: top-k of the raw logits (ties to the lower index), each chosen expert weighted by
    // sigmoid(logit) in fp32.
    for (int64_t t = 0; t < rows; ++t) {
      const float* l = logits + t * E;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(),
                        [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
      for (int64_t k = 0; k < K; ++k) {
        const int32_t e = order[k];
        r.tokens[e].push_back(static_cast<int32_t>(t));
        r.weights[e].push_back(1.0f / (1.0f + std::exp(-l[e])));
      }
    }
    return r;
  }
  for (int64_t t = 0; t < rows; ++t) {
    const float* l = logits + t * E;
    const float mx = *std::max_element(l, l + E);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(static_cast<double>(l[e]) - mx);
    for (int64_t e = 0; e < E; ++e) p[e] = static_cast<float>(std::exp(static_cast<double>(l[e]) - mx) / sum);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float total = 0;
    for (int64_t k = 0; k < K; ++k) total += p[order[k]];
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = order[k];
      r.tokens[e].push_back(static_cast<int32_t>(t));
      r.weights[e].push_back(spec.norm_topk_prob ? p[e] / total : p[e]);
    }
  }
  return r;
}

namespace {

absl::Status Linear(const LinearWeight& w, const float* x, int64_t rows, float* y, LinearHooks* hooks,
                    CpuContext* ctx) {
  if (hooks != nullptr && rows > 0)
    LLMC_RETURN_IF_ERROR(hooks->OnInput(w, absl::MakeConstSpan(x, rows * w.in_features), rows));
  // Activations fake-quantized as the checkpoint says (evaluation): row-wise, so a gathered expert input
  // quantizes as the rows would in place.
  std::vector<float> qx;
  if (w.input_quant != nullptr && rows > 0) {
    qx.assign(x, x + rows * w.in_features);
    w.input_quant->Apply(qx.data(), rows);
    x = qx.data();
  }
  LinearForward(x, rows, w.in_features, w.weight.data(), w.bias.empty() ? nullptr : w.bias.data(),
                w.out_features, y, ctx);
  if (w.output_quant != nullptr && rows > 0) w.output_quant->Apply(y, rows);
  return absl::OkStatus();
}

// y [rows, H] = down(silu(gate(x)) * up(x)).
absl::Status Expert(const LinearWeight& gate, const LinearWeight& up, const LinearWeight& down,
                    const float* x, int64_t rows, float* y, LinearHooks* hooks, CpuContext* ctx) {
  const int64_t I = gate.out_features;
  std::vector<float> g(rows * I), u(rows * I);
  LLMC_RETURN_IF_ERROR(Linear(gate, x, rows, g.data(), hooks, ctx));
  LLMC_RETURN_IF_ERROR(Linear(up, x, rows, u.data(), hooks, ctx));
  SwiGlu(g.data(), u.data(), rows * I, g.data(), ctx);
  return Linear(down, g.data(), rows, y, hooks, ctx);
}

// Llama 4's experts (see kLlama4): routed token t of expert e runs on s * m[t] and its output is added as is;
// then the shared expert's output on m. With `all`, every expert first runs on every unscaled row for the hooks.
absl::Status RunLlama4Experts(const MoeMlp& moe, const MoeRouting& routing, const float* m, int64_t rows,
                              int64_t H, bool all, float* out, LinearHooks* hooks, CpuContext* ctx) {
  const int64_t E = static_cast<int64_t>(moe.gate.size());
  std::vector<float> xg, y;
  for (int64_t e = 0; e < E; ++e) {
    if (all) {
      y.resize(rows * H);
      LLMC_RETURN_IF_ERROR(Expert(moe.gate[e], moe.up[e], moe.down[e], m, rows, y.data(), hooks, ctx));
    }
    const std::vector<int32_t>& toks = routing.tokens[e];
    if (toks.empty()) continue;
    const int64_t n = static_cast<int64_t>(toks.size());
    xg.resize(n * H);
    GatherRows(m, toks.data(), n, H, xg.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < H; ++c) xg[i * H + c] *= routing.weights[e][i];
    y.resize(n * H);
    LLMC_RETURN_IF_ERROR(Expert(moe.gate[e], moe.up[e], moe.down[e], xg.data(), n, y.data(), all ? nullptr : hooks, ctx));
    const std::vector<float> ones(n, 1.0f);
    ScatterAddScaledRows(y.data(), nullptr, toks.data(), ones.data(), n, H, out);
  }
  if (!moe.has_shared()) return absl::InternalError("a Llama 4 MoE layer without its shared expert");
  y.resize(rows * H);
  LLMC_RETURN_IF_ERROR(Expert(moe.shared_gate, moe.shared_up, moe.shared_down, m, rows, y.data(), hooks, ctx));
  for (int64_t i = 0; i < rows * H; ++i) out[i] += y[i];
  return absl::OkStatus();
}

}  // namespace

absl::Status RunMoeMlp(const MoeSpec& spec, const MoeMlp& moe, const float* m, int64_t rows, int64_t hidden,
                       float* out, LinearHooks* hooks, CpuContext* ctx) {
  const int64_t E = spec.num_experts, H = hidden;
  std::vector<float> logits(rows * E);
  LLMC_RETURN_IF_ERROR(Linear(moe.router, m, rows, logits.data(), hooks, ctx));
  const MoeRouting routing = RouteTokens(spec, logits.data(), rows);
  const bool all = hooks != nullptr && hooks->SeeAllExperts();
  std::fill(out, out + rows * H, 0.0f);
  std::vector<float> xg, y;
  if (spec.style == MoeStyle::kLlama4) return RunLlama4Experts(moe, routing, m, rows, H, all, out, hooks, ctx);
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int32_t>& toks = routing.tokens[e];
    const std::vector<float>& ws = routing.weights[e];
    if (toks.empty() && !all) continue;
    const int64_t n = all ? rows : static_cast<int64_t>(toks.size());
    const float* xin = m;
    if (!all) {
      xg.resize(n * H);
      GatherRows(m, toks.data(), n, H, xg.data());
      xin = xg.data();
    }
    y.resize(n * H);
    LLMC_RETURN_IF_ERROR(Expert(moe.gate[e], moe.up[e], moe.down[e], xin, n, y.data(), hooks, ctx));
    ScatterAddScaledRows(y.data(), all ? toks.data() : nullptr, toks.data(), ws.data(),
                         static_cast<int64_t>(toks.size()), H, out);
  }
  if (moe.has_shared()) {
    y.resize(rows * H);
    LLMC_RETURN_IF_ERROR(
        Expert(moe.shared_gate, moe.shared_up, moe.shared_down, m, rows, y.data(), hooks, ctx));
    if (!moe.has_shared_gate()) return absl::InternalError("the shared expert of a Qwen2-MoE layer has no gate");
    std::vector<float> g(rows);
    LLMC_RETURN_IF_ERROR(Linear(moe.shared_expert_gate, m, rows, g.data(), hooks, ctx));
    std::vector<int32_t> all_rows(rows);
    std::iota(all_rows.begin(), all_rows.end(), 0);
    for (float& v : g) v = SharedExpertScale(v);
    ScatterAddScaledRows(y.data(), nullptr, all_rows.data(), g.data(), rows, H, out);
  }
  return absl::OkStatus();
}

}  // namespace llmc
