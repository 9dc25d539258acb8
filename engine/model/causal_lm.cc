#include "engine/model/causal_lm.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/cpu_ops.h"

namespace llmc {

absl::StatusOr<std::unique_ptr<CausalLm>> CausalLm::Open(const std::string& path,
                                                         const CausalLmOptions& options) {
  std::unique_ptr<CausalLm> lm(new CausalLm());
  LLMC_ASSIGN_OR_RETURN(lm->dir_, ModelDir::Open(path));
  LLMC_ASSIGN_OR_RETURN(lm->spec_, ResolveModelSpec(*lm->dir_));
  LLMC_ASSIGN_OR_RETURN(lm->loader_, WeightLoader::Create(lm->dir_.get()));
  if (options.quantize_activations) LLMC_RETURN_IF_ERROR(lm->loader_->activation_support());
  lm->options_ = options;
  if (lm->options_.max_chunk_tokens < 1) lm->options_.max_chunk_tokens = 1;
  lm->ctx_ = std::make_unique<CpuContext>(options.threads);
  LLMC_ASSIGN_OR_RETURN(lm->final_norm_, lm->LoadNorm(lm->spec_.layout.NormTensor(), lm->spec_.hidden_size));
  return lm;
}

absl::StatusOr<std::vector<float>> CausalLm::LoadNorm(const std::string& name, int64_t size) const {
  LLMC_ASSIGN_OR_RETURN(std::vector<float> w, loader_->LoadDense(name, {size}));
  // transformers' Gemma norms: (1.0 + weight.float()) in fp32, as here.
  if (spec_.norm_offset != 0.0f)
    for (float& v : w) v += spec_.norm_offset;
  return w;
}

const RopeTable& CausalLm::Rope(int64_t seq_len) const {
  if (rope_ == nullptr || !rope_->Serves(spec_.rope, seq_len))
    rope_ = std::make_unique<RopeTable>(spec_.rope, spec_.rotary_dim(), seq_len);
  return *rope_;
}

const RopeTable& CausalLm::Rope(int64_t seq_len, int layer) const {
  if (!spec_.local_rope || &spec_.rope_for(layer) == &spec_.rope) return Rope(seq_len);
  if (rope_local_ == nullptr || !rope_local_->Serves(spec_.rope_local, seq_len))
    rope_local_ = std::make_unique<RopeTable>(spec_.rope_local, spec_.rotary_dim(), seq_len);
  return *rope_local_;
}

absl::StatusOr<HiddenStates> CausalLm::Embed(absl::Span<const int32_t> ids, int64_t num_seqs,
                                             int64_t seq_len) const {
  if (num_seqs < 0 || seq_len < 1 || static_cast<int64_t>(ids.size()) != num_seqs * seq_len)
    return absl::InvalidArgumentError(
        absl::StrCat("Embed: ", ids.size(), " token ids do not make ", num_seqs, " sequences of ", seq_len));
  HiddenStates x;
  x.num_seqs = num_seqs;
  x.seq_len = seq_len;
  x.hidden = spec_.hidden_size;
  x.data.resize(static_cast<size_t>(x.tokens() * x.hidden));
  LLMC_RETURN_IF_ERROR(loader_->GatherRows(spec_.layout.EmbedTensor(), spec_.vocab_size, spec_.hidden_size,
                                           ids, x.data.data()));
  if (spec_.embedding_scale != 1.0f)
    for (float& v : x.data) v *= spec_.embedding_scale;
  return x;
}

absl::StatusOr<CausalLm::EmbeddingTable> CausalLm::Embeddings() const {
  EmbeddingTable t;
  t.rows = spec_.vocab_size;
  t.cols = spec_.hidden_size;
  t.scale = spec_.embedding_scale;
  LLMC_ASSIGN_OR_RETURN(t.data, loader_->DenseRows(spec_.layout.EmbedTensor(), t.rows, t.cols, &t.dtype));
  return t;
}

absl::Status CausalLm::CheckTokenIds(absl::Span<const int32_t> ids) const {
  return loader_->CheckRowIds(spec_.vocab_size, ids);
}

absl::StatusOr<LinearWeight> CausalLm::LoadLinear(const std::string& module, int layer, int64_t out,
                                                  int64_t in, bool bias) const {
  LinearWeight w;
  w.name = module;
  w.layer = layer;
  w.out_features = out;
  w.in_features = in;
  LLMC_ASSIGN_OR_RETURN(w.weight, loader_->LoadLinearWeight(module, out, in));
  if (bias) {
    LLMC_ASSIGN_OR_RETURN(w.bias, loader_->LoadDense(module + ".bias", {out}));
  }
  LLMC_RETURN_IF_ERROR(AttachActivationQuant(&w));
  return w;
}

absl::Status CausalLm::LoadFusedExperts(int layer, DecoderBlock* b) const {
  const std::string p = spec_.layout.LayerPrefix(layer);
  const int64_t E = spec_.moe.num_experts, H = spec_.hidden_size, I = spec_.moe.expert_intermediate;
  // Llama4TextExperts: gate_up_proj [E, H, 2I] (x @ gate_up: gate the first I columns, up the rest), down_proj
  // [E, I, H]; each expert's Linear weight is the transposed slice.
  LLMC_ASSIGN_OR_RETURN(std::vector<float> gate_up,
                        loader_->LoadDense(MoeFusedExpertsName(p, "gate_up_proj"), {E, H, 2 * I}));
  LLMC_ASSIGN_OR_RETURN(std::vector<float> down, loader_->LoadDense(MoeFusedExpertsName(p, "down_proj"), {E, I, H}));
  auto slice = [&](const char* which, int64_t e, int64_t out, int64_t in, auto at) -> absl::StatusOr<LinearWeight> {
    LinearWeight w;
    w.name = MoeExpertName(MoeStyle::kLlama4, p, e, which);
    w.layer = layer;
    w.out_features = out;
    w.in_features = in;
    w.weight.resize(static_cast<size_t>(out * in));
    for (int64_t r = 0; r < out; ++r)
      for (int64_t c = 0; c < in; ++c) w.weight[r * in + c] = at(r, c);
    LLMC_RETURN_IF_ERROR(AttachActivationQuant(&w));
    return w;
  };
  for (int64_t e = 0; e < E; ++e) {
    const float* gu = gate_up.data() + e * H * 2 * I;
    const float* dn = down.data() + e * I * H;
    LLMC_ASSIGN_OR_RETURN(b->moe.gate[e], slice("gate", e, I, H, [&](int64_t r, int64_t c) { return gu[c * 2 * I + r]; }));
    LLMC_ASSIGN_OR_RETURN(b->moe.up[e], slice("up", e, I, H, [&](int64_t r, int64_t c) { return gu[c * 2 * I + I + r]; }));
    LLMC_ASSIGN_OR_RETURN(b->moe.down[e], slice("down", e, H, I, [&](int64_t r, int64_t c) { return dn[c * H + r]; }));
  }
  return absl::OkStatus();
}

absl::Status CausalLm::AttachActivationQuant(LinearWeight* w) const {
  if (!options_.quantize_activations) return absl::OkStatus();
  LLMC_ASSIGN_OR_RETURN(w->input_quant, loader_->LinearActivationQuant(w->name, "input", w->in_features));
  LLMC_ASSIGN_OR_RETURN(w->output_quant, loader_->LinearActivationQuant(w->name, "output", w->out_features));
  return absl::OkStatus();
}

absl::Status CausalLm::SetQuantizeActivations(bool on) {
  if (on) LLMC_RETURN_IF_ERROR(loader_->activation_support());
  options_.quantize_activations = on;
  return absl::OkStatus();
}

bool CausalLm::quantizes_activations() const {
  return options_.quantize_activations && loader_->quantizes_activations();
}

std::string CausalLm::WeightStorage() const {
  const std::string p = spec_.layout.LayerPrefix(0);
  if (!spec_.moe.IsSparse(0)) return loader_->StorageOf(p + spec_.mlp_prefix + "down_proj");
  // Llama 4's experts may be stored fused; its shared expert is a plain Linear either way.
  if (spec_.moe.style == MoeStyle::kLlama4) return loader_->StorageOf(MoeSharedName(p, "down", MoeStyle::kLlama4));
  return loader_->StorageOf(MoeExpertName(spec_.moe.style, p, 0, "down"));
}

absl::StatusOr<std::unique_ptr<DecoderBlock>> CausalLm::LoadBlock(int layer, LinearHooks* hooks) const {
  if (layer < 0 || layer >= spec_.num_layers)
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " is outside [0, ", spec_.num_layers, ")"));
  auto b = std::make_unique<DecoderBlock>();
  b->layer = layer;
  const std::string p = spec_.layout.LayerPrefix(layer);
  const int64_t H = spec_.hidden_size, Q = spec_.q_size(), KV = spec_.kv_size(), I = spec_.intermediate_size;
  LLMC_ASSIGN_OR_RETURN(b->input_norm, LoadNorm(p + "input_layernorm.weight", H));
  LLMC_ASSIGN_OR_RETURN(b->post_attention_norm, LoadNorm(p + "post_attention_layernorm.weight", H));
  if (spec_.sandwich_norms) {
    LLMC_ASSIGN_OR_RETURN(b->pre_feedforward_norm, LoadNorm(p + "pre_feedforward_layernorm.weight", H));
    LLMC_ASSIGN_OR_RETURN(b->post_feedforward_norm, LoadNorm(p + "post_feedforward_layernorm.weight", H));
  }
  if (spec_.qk_norm) {
    LLMC_ASSIGN_OR_RETURN(b->q_norm, LoadNorm(p + "self_attn.q_norm.weight", spec_.head_dim));
    LLMC_ASSIGN_OR_RETURN(b->k_norm, LoadNorm(p + "self_attn.k_norm.weight", spec_.head_dim));
  }
  struct Job {
    LinearWeight* dst;
    std::string name;  // module name
    int64_t out, in;
    bool bias;
  };
  std::vector<Job> jobs;
  if (spec_.fused_projections) {
    jobs = {{&b->qkv_proj, p + "self_attn.qkv_proj", Q + 2 * KV, H, spec_.qkv_bias},
            {&b->o_proj, p + "self_attn.o_proj", H, Q, spec_.o_bias}};
  } else {
    jobs = {{&b->q_proj, p + "self_attn.q_proj", Q, H, spec_.qkv_bias},
            {&b->k_proj, p + "self_attn.k_proj", KV, H, spec_.qkv_bias},
            {&b->v_proj, p + "self_attn.v_proj", KV, H, spec_.qkv_bias},
            {&b->o_proj, p + "self_attn.o_proj", H, Q, spec_.o_bias}};
  }
  const MoeSpec& moe = spec_.moe;
  if (moe.IsSparse(layer)) {
    const int64_t E = moe.num_experts, IE = moe.expert_intermediate;
    b->moe.gate.resize(E);
    b->moe.up.resize(E);
    b->moe.down.resize(E);
    jobs.push_back({&b->moe.router, MoeRouterName(moe.style, p), E, H, false});
    // Llama 4's experts stored as the two fused 3-D tensors are sliced here (checkpoints llmc or llm-compressor
    // wrote hold one Linear per expert instead, and load below as any other).
    const bool fused_experts =
        moe.style == MoeStyle::kLlama4 && dir().Find(MoeFusedExpertsName(p, "gate_up_proj")) != nullptr;
    if (fused_experts) LLMC_RETURN_IF_ERROR(LoadFusedExperts(layer, b.get()));
    for (int64_t e = 0; e < E && !fused_experts; ++e) {
      jobs.push_back({&b->moe.gate[e], MoeExpertName(moe.style, p, e, "gate"), IE, H, false});
      jobs.push_back({&b->moe.up[e], MoeExpertName(moe.style, p, e, "up"), IE, H, false});
      jobs.push_back({&b->moe.down[e], MoeExpertName(moe.style, p, e, "down"), H, IE, false});
    }
    if (moe.shared_intermediate > 0) {
      const int64_t IS = moe.shared_intermediate;
      jobs.push_back({&b->moe.shared_gate, MoeSharedName(p, "gate", moe.style), IS, H, false});
      jobs.push_back({&b->moe.shared_up, MoeSharedName(p, "up", moe.style), IS, H, false});
      jobs.push_back({&b->moe.shared_down, MoeSharedName(p, "down", moe.style), H, IS, false});
      if (moe.style != MoeStyle::kLlama4)  // Llama 4's shared expert is added ungated
        jobs.push_back({&b->moe.shared_expert_gate, MoeSharedName(p, "gate_weight"), 1, H, false});
    }
  } else if (spec_.fused_projections) {
    jobs.push_back({&b->gate_up_proj, p + "mlp.gate_up_proj", 2 * I, H, spec_.mlp_bias});
    jobs.push_back({&b->down_proj, p + "mlp.down_proj", H, I, spec_.mlp_bias});
  } else {
    const std::string mlp = p + spec_.mlp_prefix;
    jobs.push_back({&b->gate_proj, mlp + "gate_proj", I, H, spec_.mlp_bias});
    jobs.push_back({&b->up_proj, mlp + "up_proj", I, H, spec_.mlp_bias});
    jobs.push_back({&b->down_proj, mlp + "down_proj", H, I, spec_.mlp_bias});
  }
  const int64_t kJobs = static_cast<int64_t>(jobs.size());
  // Conversion and dequantization of the modules run side by side; hooks then see them in order.
  std::vector<absl::Status> status(kJobs);
  ctx_->ParallelFor(kJobs, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      auto w = LoadLinear(jobs[j].name, layer, jobs[j].out, jobs[j].in, jobs[j].bias);
      if (w.ok()) {
        *jobs[j].dst = std::move(*w);
      } else {
        status[j] = w.status();
      }
    }
  });
  for (const auto& s : status) LLMC_RETURN_IF_ERROR(s);
  if (options_.quantize_activations) {
    LLMC_ASSIGN_OR_RETURN(b->k_cache_quant,
                          loader_->KvCacheQuant(p + "self_attn", "k", spec_.num_kv_heads, spec_.head_dim));
    LLMC_ASSIGN_OR_RETURN(b->v_cache_quant,
                          loader_->KvCacheQuant(p + "self_attn", "v", spec_.num_kv_heads, spec_.head_dim));
  }
  if (hooks != nullptr)
    for (LinearWeight* w : b->linears()) LLMC_RETURN_IF_ERROR(hooks->OnWeightLoaded(w));
  return b;
}

absl::Status CausalLm::RunBlock(const DecoderBlock& block, HiddenStates* x, LinearHooks* hooks) const {
  if (x->hidden != spec_.hidden_size)
    return absl::InvalidArgumentError(
        absl::StrCat("RunBlock: hidden states have width ", x->hidden, ", the model ", spec_.hidden_size));
  return RunDecoderBlock(spec_, Rope(x->seq_len, block.layer), block, x, hooks, options_.max_chunk_tokens,
                         ctx_.get());
}

absl::Status CausalLm::ApplyFinalNorm(HiddenStates* x) const {
  if (x->hidden != spec_.hidden_size)
    return absl::InvalidArgumentError(absl::StrCat("ApplyFinalNorm: hidden states have width ", x->hidden,
                                                   ", the model ", spec_.hidden_size));
  RmsNorm(x->data.data(), x->tokens(), x->hidden, final_norm_.data(), static_cast<float>(spec_.rms_norm_eps),
          x->data.data(), ctx_.get());
  return absl::OkStatus();
}

absl::StatusOr<LinearWeight> CausalLm::LoadLmHead(LinearHooks* hooks) const {
  LinearWeight w;
  const std::string& lm_head = spec_.layout.lm_head;
  if (spec_.tie_word_embeddings) {
    w.name = lm_head;
    w.out_features = spec_.vocab_size;
    w.in_features = spec_.hidden_size;
    LLMC_ASSIGN_OR_RETURN(
        w.weight, loader_->LoadDense(spec_.layout.EmbedTensor(), {spec_.vocab_size, spec_.hidden_size}));
    LLMC_RETURN_IF_ERROR(AttachActivationQuant(&w));
  } else {
    if (!loader_->Has(lm_head + ".weight") && !loader_->Has(lm_head + ".weight_packed"))
      return absl::NotFoundError(absl::StrCat(dir_->path(), ": no ", lm_head,
                                              ".weight and tie_word_embeddings is false; ",
                                              "the checkpoint does not match its config.json"));
    LLMC_ASSIGN_OR_RETURN(w, LoadLinear(lm_head, -1, spec_.vocab_size, spec_.hidden_size, false));
  }
  if (hooks != nullptr) LLMC_RETURN_IF_ERROR(hooks->OnWeightLoaded(&w));
  return w;
}

absl::Status CausalLm::Logits(const LinearWeight& head, const float* x, int64_t rows, float* logits,
                              LinearHooks* hooks) const {
  if (hooks != nullptr)
    LLMC_RETURN_IF_ERROR(hooks->OnInput(head, absl::MakeConstSpan(x, rows * head.in_features), rows));
  std::vector<float> quantized;
  auto quantize = [&](const ActivationQuantizer& q, float* v, int64_t n) {
    ctx_->ParallelFor(n, 1, [&](int64_t r0, int64_t r1) { q.Apply(v + r0 * q.cols(), r1 - r0); });
  };
  if (head.input_quant != nullptr) {
    quantized.assign(x, x + rows * head.in_features);
    quantize(*head.input_quant, quantized.data(), rows);
    x = quantized.data();
  }
  LinearForward(x, rows, head.in_features, head.weight.data(), head.bias.empty() ? nullptr : head.bias.data(),
                head.out_features, logits, ctx_.get());
  if (head.output_quant != nullptr) quantize(*head.output_quant, logits, rows);
  if (spec_.final_softcap > 0) Softcap(logits, rows * head.out_features, spec_.final_softcap, ctx_.get());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CausalLm::Forward(
    absl::Span<const int32_t> ids, int64_t num_seqs, int64_t seq_len,
    const std::function<void(int, const HiddenStates&)>& on_hidden, LinearHooks* hooks) const {
  LLMC_ASSIGN_OR_RETURN(HiddenStates x, Embed(ids, num_seqs, seq_len));
  if (on_hidden) on_hidden(0, x);
  for (int layer = 0; layer < spec_.num_layers; ++layer) {
    LLMC_ASSIGN_OR_RETURN(auto block, LoadBlock(layer, hooks));
    LLMC_RETURN_IF_ERROR(RunBlock(*block, &x, hooks));
    if (layer + 1 == spec_.num_layers) LLMC_RETURN_IF_ERROR(ApplyFinalNorm(&x));
    if (on_hidden) on_hidden(layer + 1, x);
  }
  LLMC_ASSIGN_OR_RETURN(LinearWeight head, LoadLmHead(hooks));
  std::vector<float> logits(static_cast<size_t>(x.tokens() * spec_.vocab_size));
  LLMC_RETURN_IF_ERROR(Logits(head, x.data.data(), x.tokens(), logits.data(), hooks));
  return logits;
}

}  // namespace llmc
