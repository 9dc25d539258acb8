#include "engine/calib/decoder_block_view.h"

#include "absl/strings/str_cat.h"
#include "engine/model/cpu_ops.h"

namespace llmc {

std::string DecoderBlockView::prefix() const { return lm_->spec().layout.LayerPrefix(block_->layer); }

std::vector<std::pair<std::string, std::vector<float>*>> DecoderBlockView::norms() {
  const std::string p = prefix();
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

absl::Status DecoderBlockView::ParentForward(absl::Span<LinearWeight* const> balance,
                                             absl::Span<const std::vector<float>* const> weights,
                                             std::vector<float>* out) {
  if (balance.empty() || weights.size() != balance.size())
    return absl::InvalidArgumentError("ParentForward needs one weight (or null) per balance Linear");
  for (size_t i = 0; i < balance.size(); ++i)
    if (weights[i] && weights[i]->size() != balance[i]->weight.size())
      return absl::InvalidArgumentError(absl::StrCat(balance[i]->name, ": substituted weight has ", weights[i]->size(),
                                                     " values, the Linear ", balance[i]->weight.size()));
  auto it = stats_->find(InputGroup(balance[0]->name));
  if (it == stats_->end() || it->second.captured_tokens == 0)
    return absl::FailedPreconditionError(absl::StrCat(balance[0]->name, ": no captured calibration inputs"));
  const GroupStats& st = it->second;
  const int64_t T = st.captured_seq_len, rows = st.captured_tokens, seqs = rows / T;
  const float* xin = st.captured.data();
  const std::string leaf = LinearLeaf(balance[0]->name);
  const int64_t out_cols =
      (leaf == "o_proj" || leaf == "down_proj") ? balance[0]->out_features : lm_->spec().hidden_size;
  // The parent reads its members in a fixed order; substitute the balance layers.
  std::vector<const LinearWeight*> order;
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") order = {&block_->q_proj, &block_->k_proj, &block_->v_proj};
  else if (leaf == "gate_proj" || leaf == "up_proj") order = {&block_->gate_proj, &block_->up_proj};
  else order = {balance[0]};
  std::vector<Operand> ws;
  for (const LinearWeight* o : order) {
    Operand use{o, o->weight.data()};
    for (size_t i = 0; i < balance.size(); ++i)
      if (balance[i] == o && weights[i]) use.weight = weights[i]->data();
    ws.push_back(use);
  }
  out->assign(rows * out_cols, 0.0f);
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") {
    AttentionOut(ws[0], ws[1], ws[2], xin, seqs, T, out->data());
  } else if (leaf == "gate_proj" || leaf == "up_proj") {
    MlpOut(ws[0], ws[1], xin, rows, out->data());
  } else {
    const LinearWeight& l = *ws[0].linear;
    LinearForward(xin, rows, l.in_features, ws[0].weight, l.bias.empty() ? nullptr : l.bias.data(), l.out_features,
                  out->data(), lm_->context());
  }
  return absl::OkStatus();
}

void DecoderBlockView::AttentionOut(const Operand& qw, const Operand& kw, const Operand& vw, const float* n,
                                    int64_t seqs, int64_t T, float* out) const {
  const DecoderBlock& b = *block_;
  const ModelSpec& spec = lm_->spec();
  CpuContext* ctx = lm_->context();
  const int64_t rows = seqs * T, H = spec.hidden_size, Q = spec.q_size(), KV = spec.kv_size();
  std::vector<float> q(rows * Q), k(rows * KV), v(rows * KV), attn(rows * Q);
  auto lin = [&](const Operand& w, const float* x, float* y) {
    const LinearWeight& l = *w.linear;
    LinearForward(x, rows, l.in_features, w.weight, l.bias.empty() ? nullptr : l.bias.data(), l.out_features, y, ctx);
  };
  lin(qw, n, q.data());
  lin(kw, n, k.data());
  lin(vw, n, v.data());
  const float eps = static_cast<float>(spec.rms_norm_eps);
  if (spec.qk_norm) {
    RmsNorm(q.data(), rows * spec.num_heads, spec.head_dim, b.q_norm.data(), eps, q.data(), ctx);
    RmsNorm(k.data(), rows * spec.num_kv_heads, spec.head_dim, b.k_norm.data(), eps, k.data(), ctx);
  }
  const RopeTable& rope = lm_->Rope(T);
  ApplyRotary(q.data(), seqs, T, spec.num_heads, rope, ctx);
  ApplyRotary(k.data(), seqs, T, spec.num_kv_heads, rope, ctx);
  CausalAttention(q.data(), k.data(), v.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                  spec.sliding_window, attn.data(), ctx);
  LinearForward(attn.data(), rows, Q, b.o_proj.weight.data(), b.o_proj.bias.empty() ? nullptr : b.o_proj.bias.data(), H,
                out, ctx);
}

void DecoderBlockView::MlpOut(const Operand& gw, const Operand& uw, const float* m, int64_t rows, float* out) const {
  const DecoderBlock& b = *block_;
  CpuContext* ctx = lm_->context();
  const int64_t I = lm_->spec().intermediate_size, H = lm_->spec().hidden_size;
  const LinearWeight& g_l = *gw.linear;
  const LinearWeight& u_l = *uw.linear;
  std::vector<float> g(rows * I), u(rows * I);
  LinearForward(m, rows, H, gw.weight, g_l.bias.empty() ? nullptr : g_l.bias.data(), I, g.data(), ctx);
  LinearForward(m, rows, H, uw.weight, u_l.bias.empty() ? nullptr : u_l.bias.data(), I, u.data(), ctx);
  SwiGlu(g.data(), u.data(), rows * I, g.data(), ctx);
  LinearForward(g.data(), rows, I, b.down_proj.weight.data(), b.down_proj.bias.empty() ? nullptr : b.down_proj.bias.data(),
                H, out, ctx);
}

}  // namespace llmc
