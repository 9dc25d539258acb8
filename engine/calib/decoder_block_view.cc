#include "engine/calib/decoder_block_view.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/format/algorithms.h"
#include "engine/model/attention_inputs.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/moe.h"

namespace llmc {

namespace {

bool SameMappings(const std::vector<SmoothMapping>& a, const std::vector<SmoothMapping>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].smooth != b[i].smooth || a[i].balance != b[i].balance) return false;
  return true;
}

}  // namespace

std::vector<SmoothMapping> MoeAwqMappings(const ModelSpec& spec) {
  if (spec.moe.style == MoeStyle::kMixtral)
    return {{{"re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"}, "re:.*input_layernorm$"},
            {{"re:.*o_proj$"}, "re:.*v_proj$"},
            {{"re:.*block_sparse_moe\\.gate$", "re:.*block_sparse_moe\\.experts\\.\\d+\\.w1$",
              "re:.*block_sparse_moe\\.experts\\.\\d+\\.w3$"},
             "re:.*post_attention_layernorm$"},
            {{"re:.*block_sparse_moe\\.experts\\.\\d+\\.w2$"}, "re:.*block_sparse_moe\\.experts\\.\\d+\\.w3$"}};
  // Dense layers (decoder_sparse_step, mlp_only_layers, Llama 4's moe_layers), where the model has some.
  bool dense = false;
  for (int l = 0; l < spec.num_layers; ++l) dense |= !spec.moe.IsSparse(l);
  if (spec.moe.style == MoeStyle::kLlama4) {
    // llm-compressor maps post_attention_layernorm to every gate/up projection for Llama 4 and leaves the router
    // out, which changes the routing; here the router is balanced too (every expert's input is sigmoid(router
    // logit) times the norm's output, so scaling the router's and the experts' inputs together is exact).
    std::vector<SmoothMapping> out = {
        {{"re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"}, "re:.*input_layernorm$"},
        {{"re:.*o_proj$"}, "re:.*v_proj$"},
        {{"re:.*feed_forward\\.router$", "re:.*feed_forward\\.experts\\.\\d+\\.gate_proj$",
          "re:.*feed_forward\\.experts\\.\\d+\\.up_proj$", "re:.*feed_forward\\.shared_expert\\.gate_proj$",
          "re:.*feed_forward\\.shared_expert\\.up_proj$"},
         "re:.*post_attention_layernorm$"},
        {{"re:.*down_proj$"}, "re:.*up_proj$"}};
    if (dense)
      out.insert(out.begin() + 3, SmoothMapping{{"re:.*feed_forward\\.gate_proj$", "re:.*feed_forward\\.up_proj$"},
                                                "re:.*post_attention_layernorm$"});
    return out;
  }
  std::vector<SmoothMapping> out = {
          {{"re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"}, "re:.*input_layernorm$"},
          {{"re:.*o_proj$"}, "re:.*v_proj$"},
          // Sparse layers: the router, every expert's gate/up and (Qwen2-MoE) the shared expert and its gate.
          {{"re:.*mlp\\.gate$", "re:.*mlp\\.experts\\.\\d+\\.gate_proj$", "re:.*mlp\\.experts\\.\\d+\\.up_proj$",
            "re:.*mlp\\.shared_expert\\.gate_proj$", "re:.*mlp\\.shared_expert\\.up_proj$",
            "re:.*mlp\\.shared_expert_gate$"},
           "re:.*post_attention_layernorm$"},
          // Per expert (and shared expert, dense MLP): up_proj -> its own down_proj.
          {{"re:.*down_proj$"}, "re:.*up_proj$"}};
  if (dense)
    out.insert(out.begin() + 3, SmoothMapping{{"re:.*mlp\\.gate_proj$", "re:.*mlp\\.up_proj$"}, "re:.*post_attention_layernorm$"});
  return out;
}

std::vector<SmoothMapping> MoeSmoothQuantMappings() {
  return {{{"re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"}, "re:.*input_layernorm$"}};
}

std::vector<std::string> MoeNormReaders(const ModelSpec& spec, int layer) {
  const std::string p = spec.layout.LayerPrefix(layer);
  std::vector<std::string> out = {MoeRouterName(spec.moe.style, p)};
  for (int64_t e = 0; e < spec.moe.num_experts; ++e)
    for (const char* w : {"gate", "up"}) out.push_back(MoeExpertName(spec.moe.style, p, e, w));
  if (spec.moe.shared_intermediate > 0) {
    for (const char* w : {"gate", "up"}) out.push_back(MoeSharedName(p, w, spec.moe.style));
    if (spec.moe.style != MoeStyle::kLlama4) out.push_back(MoeSharedName(p, "gate_weight"));  // Llama 4's is ungated
  }
  return out;
}

absl::Status CheckMoeSmoothMappings(const std::vector<SmoothMapping>& mappings, const std::vector<std::string>& ignore,
                                    bool routers_balanced_when_ignored, const ModelSpec& spec, const char* modifier) {
  if (!spec.moe.enabled()) return absl::OkStatus();
  int layer = -1;
  for (int l = 0; l < spec.num_layers && layer < 0; ++l)
    if (spec.moe.IsSparse(l)) layer = l;
  if (layer < 0) return absl::OkStatus();
  const std::string norm = spec.layout.LayerPrefix(layer) + "post_attention_layernorm";
  const std::vector<std::string> readers = MoeNormReaders(spec, layer);
  for (size_t i = 0; i < mappings.size(); ++i) {
    const SmoothMapping& m = mappings[i];
    if (!MatchesTarget(m.smooth, norm)) continue;
    std::vector<std::string> covered, missing;
    for (const std::string& r : readers) {
      bool named = false, ignored = false;
      for (const auto& b : m.balance) named |= MatchesTarget(b, r);
      for (const auto& g : ignore) ignored |= MatchesTarget(g, r);
      ignored &= !(routers_balanced_when_ignored && IsMoeRouter(r));
      (named && !ignored ? covered : missing).push_back(r);
    }
    if (covered.empty() || missing.empty()) continue;  // a dense-layer mapping, or the whole MoE MLP
    return absl::InvalidArgumentError(absl::StrCat(
        modifier, ".mappings[", i, "]: smoothing ", norm, " scales the input of every Linear that reads it, but ",
        missing[0], (missing.size() > 1 ? absl::StrCat(" (and ", missing.size() - 1, " more)") : std::string()),
        " is not among the balance layers (or is ignored), so the mixture-of-experts MLP would compute another ",
        "function; balance the router, every expert's gate and up projections and the shared expert together (",
        "llm-compressor's MoE mapping), or leave the norm out"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SmoothMapping>> FamilySmoothMappings(const std::vector<SmoothMapping>& mappings,
                                                                const ModelSpec& spec, const char* modifier) {
  std::vector<SmoothMapping> out = mappings;
  if (spec.moe.enabled()) {
    // llm-compressor's MoE mappings: SmoothQuant smooths attention only; AWQ balances the MoE MLP as a whole.
    if (SameMappings(mappings, DefaultSmoothQuantMappings())) return MoeSmoothQuantMappings();
    if (SameMappings(mappings, DefaultAwqMappings())) return MoeAwqMappings(spec);
    return out;
  }
  if (spec.fused_projections) {
    // llm-compressor's Phi-3 mappings.
    if (SameMappings(mappings, DefaultSmoothQuantMappings()))
      return std::vector<SmoothMapping>{{{"re:.*qkv_proj"}, "re:.*input_layernorm"},
                                        {{"re:.*gate_up_proj"}, "re:.*post_attention_layernorm"}};
    if (SameMappings(mappings, DefaultAwqMappings()))
      return std::vector<SmoothMapping>{{{"re:.*qkv_proj$"}, "re:.*input_layernorm$"},
                                        {{"re:.*o_proj$"}, "re:.*qkv_proj$"},
                                        {{"re:.*gate_up_proj$"}, "re:.*post_attention_layernorm$"},
                                        {{"re:.*down_proj$"}, "re:.*gate_up_proj$"}};
    return out;
  }
  if (!spec.sandwich_norms) return out;
  const bool defaults =
      SameMappings(mappings, DefaultSmoothQuantMappings()) || SameMappings(mappings, DefaultAwqMappings());
  for (SmoothMapping& m : out) {
    if (!MatchesTarget(m.smooth, spec.layout.LayerPrefix(0) + "post_attention_layernorm")) continue;
    if (!defaults)
      return absl::InvalidArgumentError(absl::StrCat(
          modifier, " mapping ", m.smooth, ": in ", spec.arch->name,
          " post_attention_layernorm normalizes the attention output before the residual add and feeds no "
          "Linear; smooth re:.*pre_feedforward_layernorm into gate_proj/up_proj instead"));
    m.smooth = "re:.*pre_feedforward_layernorm";
  }
  return out;
}

std::string DecoderBlockView::prefix() const { return lm_->spec().layout.LayerPrefix(block_->layer); }

std::vector<std::pair<std::string, std::vector<float>*>> DecoderBlockView::norms() {
  const std::string p = prefix();
  // Norms whose output only feeds Linears of the block (the ones a smoothing mapping may scale). With sandwich
  // norms (Gemma) post_attention_layernorm feeds the residual stream and pre_feedforward_layernorm the MLP.
  if (lm_->spec().sandwich_norms)
    return {{p + "input_layernorm", &block_->input_norm}, {p + "pre_feedforward_layernorm", &block_->pre_feedforward_norm}};
  return {{p + "input_layernorm", &block_->input_norm}, {p + "post_attention_layernorm", &block_->post_attention_norm}};
}

std::optional<InputStatistics> DecoderBlockView::input_statistics(const std::string& module) const {
  auto it = stats_->find(InputGroup(module));
  if (it == stats_->end()) return std::nullopt;
  const GroupStats& s = it->second;
  return InputStatistics{.tokens = s.tokens,
                         .channel_max = s.channel_max,
                         .channel_abs_sum = s.channel_abs_sum,
                         .captured = s.captured,
                         .captured_tokens = s.captured_tokens,
                         .captured_seq_len = s.captured_seq_len};
}

bool DecoderBlockView::IsRouter(const std::string& module) const { return IsMoeRouter(module); }

bool DecoderBlockView::IsExpert(const std::string& module) const {
  const MoeMlp& moe = block_->moe;
  for (const std::vector<LinearWeight>* v : {&moe.gate, &moe.up, &moe.down})
    for (const LinearWeight& e : *v)
      if (e.name == module) return true;
  return false;
}

bool DecoderBlockView::InMoeMlp(const LinearWeight* lw) const {
  const MoeMlp& moe = block_->moe;
  if (!moe.active()) return false;
  if (lw == &moe.router || lw == &moe.shared_gate || lw == &moe.shared_up || lw == &moe.shared_down ||
      lw == &moe.shared_expert_gate)
    return true;
  for (const std::vector<LinearWeight>* v : {&moe.gate, &moe.up, &moe.down})
    for (const LinearWeight& e : *v)
      if (lw == &e) return true;
  return false;
}

absl::Status DecoderBlockView::MoeOut(absl::Span<LinearWeight* const> balance,
                                      absl::Span<const std::vector<float>* const> weights, const float* m, int64_t rows,
                                      float* out) {
  // Swap the substituted weights in, run, swap the block's back (on every path).
  std::vector<std::vector<float>> held(balance.size());
  for (size_t i = 0; i < balance.size(); ++i)
    if (weights[i]) {
      held[i] = *weights[i];
      balance[i]->weight.swap(held[i]);
    }
  absl::Status s = RunMoeMlp(lm_->spec().moe, block_->moe, m, rows, lm_->spec().hidden_size, out, nullptr,
                             lm_->context());
  for (size_t i = 0; i < balance.size(); ++i)
    if (weights[i]) balance[i]->weight.swap(held[i]);
  return s;
}

const ConfigGroup* DecoderBlockView::weight_group(const std::string& module) const {
  const int g = config_->Match(module, "Linear");
  if (g < 0 || !config_->groups()[g].scheme.weights) return nullptr;
  return &config_->groups()[g];
}

absl::StatusOr<AwqParent> DecoderBlockView::ResolveParent(absl::Span<LinearWeight* const> balance) const {
  if (balance.empty()) return absl::InvalidArgumentError("an AWQ parent needs at least one balance Linear");
  auto it = stats_->find(InputGroup(balance[0]->name));
  if (it == stats_->end() || it->second.captured_tokens == 0)
    return absl::FailedPreconditionError(absl::StrCat(balance[0]->name, ": no captured calibration inputs"));
  const GroupStats& st = it->second;
  AwqParent p;
  p.block = block_;
  p.spec = &lm_->spec();
  p.dtype = dtype_;
  p.input = st.captured.data();
  p.rows = st.captured_tokens;
  p.seq_len = st.captured_seq_len;
  const std::string leaf = LinearLeaf(balance[0]->name);
  // The parent reads its members in a fixed order; the balance layers are substituted among them.
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj" || leaf == "qkv_proj") {
    p.kind = AwqParent::Kind::kAttention;
    p.members = block_->fused() ? std::vector<const LinearWeight*>{&block_->qkv_proj}
                                : std::vector<const LinearWeight*>{&block_->q_proj, &block_->k_proj, &block_->v_proj};
    p.rope = &lm_->Rope(p.seq_len, block_->layer);
    p.out_features = lm_->spec().hidden_size;
  } else if (leaf == "gate_proj" || leaf == "up_proj" || leaf == "gate_up_proj") {
    p.kind = AwqParent::Kind::kMlp;
    p.members = block_->fused() ? std::vector<const LinearWeight*>{&block_->gate_up_proj}
                                : std::vector<const LinearWeight*>{&block_->gate_proj, &block_->up_proj};
    p.out_features = lm_->spec().hidden_size;
  } else {
    p.kind = AwqParent::Kind::kLinear;
    p.members = {balance[0]};
    p.out_features = balance[0]->out_features;
  }
  for (const LinearWeight* m : p.members) {
    int idx = -1;
    for (size_t i = 0; i < balance.size(); ++i)
      if (balance[i] == m) idx = static_cast<int>(i);
    p.balance_index.push_back(idx);
  }
  for (LinearWeight* b : balance) {
    p.balance.push_back(b);
    p.groups.push_back(weight_group(b->name));
  }
  return p;
}

absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> DecoderBlockView::DeviceAwqLoss(
    absl::Span<LinearWeight* const> balance) {
  // Mixture-of-experts parents (the routed MLP, an expert's down projection) search on the host.
  if (awq_device_ == nullptr || InMoeMlp(balance[0])) return std::unique_ptr<AwqLossEvaluator>();
  LLMC_ASSIGN_OR_RETURN(AwqParent parent, ResolveParent(balance));
  for (const ConfigGroup* g : parent.groups)
    if (g == nullptr) return std::unique_ptr<AwqLossEvaluator>();
  // Every balance Linear must be one the parent reads (else the device would not see the substitution).
  for (size_t i = 0; i < balance.size(); ++i)
    if (std::find(parent.balance_index.begin(), parent.balance_index.end(), static_cast<int>(i)) ==
        parent.balance_index.end())
      return std::unique_ptr<AwqLossEvaluator>();
  return awq_device_->Create(parent);
}

absl::Status DecoderBlockView::ParentForward(absl::Span<LinearWeight* const> balance,
                                             absl::Span<const std::vector<float>* const> weights,
                                             std::vector<float>* out) {
  if (balance.empty() || weights.size() != balance.size())
    return absl::InvalidArgumentError("ParentForward needs one weight (or null) per balance Linear");
  for (size_t i = 0; i < balance.size(); ++i)
    if (weights[i] && weights[i]->size() != balance[i]->weight.size())
      return absl::InvalidArgumentError(absl::StrCat(balance[i]->name, ": substituted weight has ", weights[i]->size(),
                                                     " values, the Linear ", balance[i]->weight.size()));
  if (InMoeMlp(balance[0])) {
    // The router first: the whole MoE MLP is the parent. An expert's down (w2) alone: that Linear.
    const std::string leaf = LinearLeaf(balance[0]->name);
    if (balance[0] == &block_->moe.router) {
      auto it = stats_->find(InputGroup(balance[0]->name));
      if (it == stats_->end() || it->second.captured_tokens == 0)
        return absl::FailedPreconditionError(absl::StrCat(balance[0]->name, ": no captured calibration inputs"));
      const int64_t rows = it->second.captured_tokens;
      out->assign(rows * lm_->spec().hidden_size, 0.0f);
      return MoeOut(balance, weights, it->second.captured.data(), rows, out->data());
    }
    if (leaf != "down_proj" && leaf != "w2")
      return absl::InvalidArgumentError(absl::StrCat(
          balance[0]->name, ": an expert's gate/up projection is the first balance layer of a smoothing mapping; "
          "their parent is the mixture-of-experts MLP, so list the router (", block_->moe.router.name,
          ") first among the balance layers"));
  }
  LLMC_ASSIGN_OR_RETURN(const AwqParent p, ResolveParent(balance));
  const int64_t T = p.seq_len, rows = p.rows, seqs = rows / T;
  std::vector<Operand> ws;
  for (size_t m = 0; m < p.members.size(); ++m) {
    Operand use{p.members[m], p.members[m]->weight.data()};
    const int bi = p.balance_index[m];
    if (bi >= 0 && weights[bi]) use.weight = weights[bi]->data();
    ws.push_back(use);
  }
  out->assign(rows * p.out_features, 0.0f);
  switch (p.kind) {
    case AwqParent::Kind::kAttention:
      AttentionOut(ws, p.input, seqs, T, out->data());
      break;
    case AwqParent::Kind::kMlp:
      MlpOut(ws, p.input, rows, out->data());
      break;
    case AwqParent::Kind::kLinear: {
      const LinearWeight& l = *ws[0].linear;
      LinearForward(p.input, rows, l.in_features, ws[0].weight, l.bias.empty() ? nullptr : l.bias.data(),
                    l.out_features, out->data(), lm_->context());
      break;
    }
  }
  return absl::OkStatus();
}

namespace {

// Runs the operands on x [rows, in] and lays their outputs side by side in y [rows, sum of out_features].
// `part` holds one operand's output at a time.
template <typename Op>
void SideBySide(const std::vector<Op>& ws, const float* x, int64_t rows, float* y, std::vector<float>* part_buffer,
                CpuContext* ctx) {
  int64_t width = 0;
  for (const Op& w : ws) width += w.linear->out_features;
  int64_t col = 0;
  std::vector<float>& part = *part_buffer;
  for (const Op& w : ws) {
    const LinearWeight& l = *w.linear;
    part.resize(rows * l.out_features);
    LinearForward(x, rows, l.in_features, w.weight, l.bias.empty() ? nullptr : l.bias.data(), l.out_features,
                  part.data(), ctx);
    for (int64_t r = 0; r < rows; ++r)
      std::copy(part.begin() + r * l.out_features, part.begin() + (r + 1) * l.out_features, y + r * width + col);
    col += l.out_features;
  }
}

// dst [rows, width] = columns [col0, col0 + width) of src [rows, src_width].
void Columns(const std::vector<float>& src, int64_t rows, int64_t src_width, int64_t col0, int64_t width, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    std::copy(src.begin() + r * src_width + col0, src.begin() + r * src_width + col0 + width, dst + r * width);
}

}  // namespace

void DecoderBlockView::AttentionOut(const std::vector<Operand>& ws, const float* n, int64_t seqs, int64_t T,
                                    float* out) const {
  const DecoderBlock& b = *block_;
  const ModelSpec& spec = lm_->spec();
  CpuContext* ctx = lm_->context();
  const int64_t rows = seqs * T, H = spec.hidden_size, Q = spec.q_size(), KV = spec.kv_size();
  // Every element of these is written below before it is read.
  std::vector<float> &q = scratch_.q, &k = scratch_.k, &v = scratch_.v, &attn = scratch_.attn, &qkv = scratch_.qkv;
  q.resize(rows * Q);
  k.resize(rows * KV);
  v.resize(rows * KV);
  attn.resize(rows * Q);
  qkv.resize(rows * (Q + 2 * KV));
  SideBySide(ws, n, rows, qkv.data(), &scratch_.part, ctx);  // q | k | v, fused or not
  Columns(qkv, rows, Q + 2 * KV, 0, Q, q.data());
  Columns(qkv, rows, Q + 2 * KV, Q, KV, k.data());
  Columns(qkv, rows, Q + 2 * KV, Q + KV, KV, v.data());
  PrepareQueriesAndKeys(spec, b.layer, b.q_norm.data(), b.k_norm.data(), lm_->Rope(T, b.layer), seqs, T, q.data(),
                        k.data(), ctx);
  CausalAttention(q.data(), k.data(), v.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                  spec.window(b.layer), attn.data(), ctx, spec.softmax_scale(), spec.attention_softcap,
                  spec.chunk(b.layer));
  LinearForward(attn.data(), rows, Q, b.o_proj.weight.data(), b.o_proj.bias.empty() ? nullptr : b.o_proj.bias.data(), H,
                out, ctx);
}

void DecoderBlockView::MlpOut(const std::vector<Operand>& ws, const float* m, int64_t rows, float* out) const {
  const DecoderBlock& b = *block_;
  CpuContext* ctx = lm_->context();
  const int64_t I = lm_->spec().intermediate_size, H = lm_->spec().hidden_size;
  // Every element of these is written below before it is read.
  std::vector<float> &gu = scratch_.gu, &g = scratch_.g, &u = scratch_.u;
  gu.resize(rows * 2 * I);
  g.resize(rows * I);
  u.resize(rows * I);
  SideBySide(ws, m, rows, gu.data(), &scratch_.part, ctx);  // gate | up, fused or not
  Columns(gu, rows, 2 * I, 0, I, g.data());
  Columns(gu, rows, 2 * I, I, I, u.data());
  GatedActivation(lm_->spec().activation, g.data(), u.data(), rows * I, g.data(), ctx);
  LinearForward(g.data(), rows, I, b.down_proj.weight.data(), b.down_proj.bias.empty() ? nullptr : b.down_proj.bias.data(),
                H, out, ctx);
}

}  // namespace llmc
