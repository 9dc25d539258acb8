#include "engine/model/decoder_block.h"

#include <algorithm>

#include "common/status_macros.h"
#include "engine/model/attention_inputs.h"

namespace llmc {

std::vector<LinearWeight*> DecoderBlock::linears() {
  std::vector<LinearWeight*> out;
  if (fused())
    out = {&qkv_proj, &o_proj};
  else
    out = {&q_proj, &k_proj, &v_proj, &o_proj};
  if (!moe.active()) {
    if (fused())
      out.insert(out.end(), {&gate_up_proj, &down_proj});
    else
      out.insert(out.end(), {&gate_proj, &up_proj, &down_proj});
    return out;
  }
  out.push_back(&moe.router);
  for (size_t e = 0; e < moe.gate.size(); ++e) out.insert(out.end(), {&moe.gate[e], &moe.up[e], &moe.down[e]});
  if (moe.has_shared()) out.insert(out.end(), {&moe.shared_gate, &moe.shared_up, &moe.shared_down});
  if (moe.has_shared_gate()) out.push_back(&moe.shared_expert_gate);
  return out;
}

std::vector<const LinearWeight*> DecoderBlock::linears() const {
  std::vector<const LinearWeight*> out;
  for (LinearWeight* l : const_cast<DecoderBlock*>(this)->linears()) out.push_back(l);
  return out;
}

uint64_t DecoderBlock::bytes() const {
  uint64_t n = input_norm.size() + post_attention_norm.size() + q_norm.size() + k_norm.size() +
               pre_feedforward_norm.size() + post_feedforward_norm.size();
  for (const LinearWeight* l : linears()) n += l->weight.size() + l->bias.size();
  return n * sizeof(float);
}

namespace {

// Fake-quantizes x [rows, q.cols()] in place, rows split across the threads.
void QuantizeRows(const ActivationQuantizer& q, float* x, int64_t rows, CpuContext* ctx) {
  ctx->ParallelFor(rows, std::max<int64_t>(1, (1 << 14) / q.cols()), [&](int64_t r0, int64_t r1) {
    q.Apply(x + r0 * q.cols(), r1 - r0);
  });
}

// y = x W^T + b for `tokens` rows, after letting the hooks see x. A quantized input is copied to `scratch`
// (resized as needed) first, since q/k/v and gate/up share theirs.
absl::Status Linear(const LinearWeight& w, const float* x, int64_t tokens, float* y, LinearHooks* hooks,
                    std::vector<float>* scratch, CpuContext* ctx) {
  if (hooks != nullptr)
    LLMC_RETURN_IF_ERROR(hooks->OnInput(w, absl::MakeConstSpan(x, tokens * w.in_features), tokens));
  if (w.input_quant != nullptr) {
    const size_t n = static_cast<size_t>(tokens * w.in_features);
    if (scratch->size() < n) scratch->resize(n);
    std::copy(x, x + n, scratch->data());
    QuantizeRows(*w.input_quant, scratch->data(), tokens, ctx);
    x = scratch->data();
  }
  LinearForward(x, tokens, w.in_features, w.weight.data(), w.bias.empty() ? nullptr : w.bias.data(),
                w.out_features, y, ctx);
  if (w.output_quant != nullptr) QuantizeRows(*w.output_quant, y, tokens, ctx);
  return absl::OkStatus();
}

// dst [rows, width] = columns [col0, col0 + width) of src [rows, src_width].
void CopyColumns(const float* src, int64_t rows, int64_t src_width, int64_t col0, int64_t width, float* dst,
                 CpuContext* ctx) {
  ctx->ParallelFor(rows, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      std::copy(src + r * src_width + col0, src + r * src_width + col0 + width, dst + r * width);
  });
}

void AddInPlace(float* x, const float* y, int64_t n, CpuContext* ctx) {
  ctx->ParallelFor(n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] += y[i];
  });
}

}  // namespace

void PrepareQueriesAndKeys(const ModelSpec& spec, int layer, const float* q_norm, const float* k_norm,
                           const RopeTable& rope, int64_t seqs, int64_t T, float* q, float* k, CpuContext* ctx) {
  const int64_t rows = seqs * T, Q = spec.q_size();
  const float eps = static_cast<float>(spec.rms_norm_eps);
  if (spec.qk_norm) {
    if (q != nullptr) RmsNorm(q, rows * spec.num_heads, spec.head_dim, q_norm, eps, q, ctx);
    RmsNorm(k, rows * spec.num_kv_heads, spec.head_dim, k_norm, eps, k, ctx);
  }
  if (spec.uses_rope(layer)) {
    if (q != nullptr) ApplyRotary(q, seqs, T, spec.num_heads, rope, ctx, spec.head_dim, spec.rope_interleaved);
    ApplyRotary(k, seqs, T, spec.num_kv_heads, rope, ctx, spec.head_dim, spec.rope_interleaved);
    if (spec.l2_qk_norm) {  // Llama 4's L2 norm: an RMS norm without weight, after the rotation
      const std::vector<float> ones(spec.head_dim, 1.0f);
      if (q != nullptr) RmsNorm(q, rows * spec.num_heads, spec.head_dim, ones.data(), eps, q, ctx);
      RmsNorm(k, rows * spec.num_kv_heads, spec.head_dim, ones.data(), eps, k, ctx);
    }
  } else if (spec.temperature_attn_scale > 0 && q != nullptr) {  // Llama 4's no-rope layers: q scaled by position
    for (int64_t r = 0; r < rows; ++r) {
      const float t = spec.query_temperature(layer, r % T);
      if (t != 1.0f)
        for (int64_t c = 0; c < Q; ++c) q[r * Q + c] *= t;
    }
  }
}

absl::Status RunDecoderBlock(const ModelSpec& spec, const RopeTable& rope, const DecoderBlock& block,
                             HiddenStates* x, LinearHooks* hooks, int64_t max_chunk_tokens, CpuContext* ctx) {
  const int64_t T = x->seq_len, H = spec.hidden_size, Q = spec.q_size(), KV = spec.kv_size();
  const int64_t I = spec.intermediate_size;
  const float eps = static_cast<float>(spec.rms_norm_eps);
  const int64_t chunk_seqs =
      std::max<int64_t>(1, std::min(x->num_seqs, max_chunk_tokens / std::max<int64_t>(T, 1)));
  const int64_t max_rows = chunk_seqs * T;
  std::vector<float> normed(max_rows * H), q(max_rows * Q), k(max_rows * KV), v(max_rows * KV),
      attn(max_rows * Q);
  std::vector<float> gate(max_rows * I), up(max_rows * I),
      proj(max_rows * H);  // proj: o_proj / down_proj out
  std::vector<float> qin;  // a quantized Linear input
  std::vector<float> fused;  // qkv_proj / gate_up_proj out
  if (block.fused()) fused.resize(max_rows * std::max(Q + 2 * KV, 2 * I));
  for (int64_t s0 = 0; s0 < x->num_seqs; s0 += chunk_seqs) {
    const int64_t seqs = std::min(chunk_seqs, x->num_seqs - s0);
    const int64_t rows = seqs * T;
    float* xc = x->row(s0 * T);
    // Attention.
    RmsNorm(xc, rows, H, block.input_norm.data(), eps, normed.data(), ctx);
    if (block.fused()) {
      LLMC_RETURN_IF_ERROR(Linear(block.qkv_proj, normed.data(), rows, fused.data(), hooks, &qin, ctx));
      CopyColumns(fused.data(), rows, Q + 2 * KV, 0, Q, q.data(), ctx);
      CopyColumns(fused.data(), rows, Q + 2 * KV, Q, KV, k.data(), ctx);
      CopyColumns(fused.data(), rows, Q + 2 * KV, Q + KV, KV, v.data(), ctx);
    } else {
      LLMC_RETURN_IF_ERROR(Linear(block.q_proj, normed.data(), rows, q.data(), hooks, &qin, ctx));
      LLMC_RETURN_IF_ERROR(Linear(block.k_proj, normed.data(), rows, k.data(), hooks, &qin, ctx));
      LLMC_RETURN_IF_ERROR(Linear(block.v_proj, normed.data(), rows, v.data(), hooks, &qin, ctx));
    }
    PrepareQueriesAndKeys(spec, block.layer, block.q_norm.data(), block.k_norm.data(), rope, seqs, T, q.data(),
                          k.data(), ctx);
    // The library quantizes the cache where transformers stores it: k after the rotary embedding, v as is.
    if (block.k_cache_quant != nullptr) QuantizeRows(*block.k_cache_quant, k.data(), rows, ctx);
    if (block.v_cache_quant != nullptr) QuantizeRows(*block.v_cache_quant, v.data(), rows, ctx);
    CausalAttention(q.data(), k.data(), v.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                    spec.window(block.layer), attn.data(), ctx, spec.softmax_scale(), spec.attention_softcap,
                    spec.chunk(block.layer));
    LLMC_RETURN_IF_ERROR(Linear(block.o_proj, attn.data(), rows, proj.data(), hooks, &qin, ctx));
    if (spec.sandwich_norms) RmsNorm(proj.data(), rows, H, block.post_attention_norm.data(), eps, proj.data(), ctx);
    AddInPlace(xc, proj.data(), rows * H, ctx);
    // MLP.
    RmsNorm(xc, rows, H, spec.sandwich_norms ? block.pre_feedforward_norm.data() : block.post_attention_norm.data(),
            eps, normed.data(), ctx);
    if (block.moe.active()) {
      LLMC_RETURN_IF_ERROR(RunMoeMlp(spec.moe, block.moe, normed.data(), rows, H, proj.data(), hooks, ctx));
    } else {
      if (block.fused()) {
        LLMC_RETURN_IF_ERROR(Linear(block.gate_up_proj, normed.data(), rows, fused.data(), hooks, &qin, ctx));
        CopyColumns(fused.data(), rows, 2 * I, 0, I, gate.data(), ctx);
        CopyColumns(fused.data(), rows, 2 * I, I, I, up.data(), ctx);
      } else {
        LLMC_RETURN_IF_ERROR(Linear(block.gate_proj, normed.data(), rows, gate.data(), hooks, &qin, ctx));
        LLMC_RETURN_IF_ERROR(Linear(block.up_proj, normed.data(), rows, up.data(), hooks, &qin, ctx));
      }
      GatedActivation(spec.activation, gate.data(), up.data(), rows * I, gate.data(), ctx);
      LLMC_RETURN_IF_ERROR(Linear(block.down_proj, gate.data(), rows, proj.data(), hooks, &qin, ctx));
    }
    if (spec.sandwich_norms) RmsNorm(proj.data(), rows, H, block.post_feedforward_norm.data(), eps, proj.data(), ctx);
    AddInPlace(xc, proj.data(), rows * H, ctx);
  }
  return absl::OkStatus();
}

}  // namespace llmc
