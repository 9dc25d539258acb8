#include "engine/calib/decoder_block_view.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/format/algorithms.h"
#include "engine/model/cpu_ops.h"

namespace llmc {

namespace {

bool SameMappings(const std::vector<SmoothMapping>& a, const std::vector<SmoothMapping>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].smooth != b[i].smooth || a[i].balance != b[i].balance) return false;
  return true;
}

}  // namespace

absl::StatusOr<std::vector<SmoothMapping>> FamilySmoothMappings(const std::vector<SmoothMapping>& mappings,
                                                                const ModelSpec& spec, const char* modifier) {
  std::vector<SmoothMapping> out = mappings;
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
  if (awq_device_ == nullptr) return std::unique_ptr<AwqLossEvaluator>();
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
template <typename Op>
void SideBySide(const std::vector<Op>& ws, const float* x, int64_t rows, float* y, CpuContext* ctx) {
  int64_t width = 0;
  for (const Op& w : ws) width += w.linear->out_features;
  int64_t col = 0;
  std::vector<float> part;
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
  std::vector<float> q(rows * Q), k(rows * KV), v(rows * KV), attn(rows * Q), qkv(rows * (Q + 2 * KV));
  SideBySide(ws, n, rows, qkv.data(), ctx);  // q | k | v, fused or not
  Columns(qkv, rows, Q + 2 * KV, 0, Q, q.data());
  Columns(qkv, rows, Q + 2 * KV, Q, KV, k.data());
  Columns(qkv, rows, Q + 2 * KV, Q + KV, KV, v.data());
  const float eps = static_cast<float>(spec.rms_norm_eps);
  if (spec.qk_norm) {
    RmsNorm(q.data(), rows * spec.num_heads, spec.head_dim, b.q_norm.data(), eps, q.data(), ctx);
    RmsNorm(k.data(), rows * spec.num_kv_heads, spec.head_dim, b.k_norm.data(), eps, k.data(), ctx);
  }
  const RopeTable& rope = lm_->Rope(T, b.layer);
  ApplyRotary(q.data(), seqs, T, spec.num_heads, rope, ctx, spec.head_dim);
  ApplyRotary(k.data(), seqs, T, spec.num_kv_heads, rope, ctx, spec.head_dim);
  CausalAttention(q.data(), k.data(), v.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                  spec.window(b.layer), attn.data(), ctx, spec.softmax_scale(), spec.attention_softcap);
  LinearForward(attn.data(), rows, Q, b.o_proj.weight.data(), b.o_proj.bias.empty() ? nullptr : b.o_proj.bias.data(), H,
                out, ctx);
}

void DecoderBlockView::MlpOut(const std::vector<Operand>& ws, const float* m, int64_t rows, float* out) const {
  const DecoderBlock& b = *block_;
  CpuContext* ctx = lm_->context();
  const int64_t I = lm_->spec().intermediate_size, H = lm_->spec().hidden_size;
  std::vector<float> gu(rows * 2 * I), g(rows * I), u(rows * I);
  SideBySide(ws, m, rows, gu.data(), ctx);  // gate | up, fused or not
  Columns(gu, rows, 2 * I, 0, I, g.data());
  Columns(gu, rows, 2 * I, I, I, u.data());
  GatedActivation(lm_->spec().activation, g.data(), u.data(), rows * I, g.data(), ctx);
  LinearForward(g.data(), rows, I, b.down_proj.weight.data(), b.down_proj.bias.empty() ? nullptr : b.down_proj.bias.data(),
                H, out, ctx);
}

}  // namespace llmc
