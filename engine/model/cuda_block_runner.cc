#include "engine/model/cuda_block_runner.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend/cuda/attention_kernels.h"
#include "engine/backend/cuda/model_kernels.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/cuda_status.h"

namespace llmc {

absl::Status HostLinearHooksAdapter::OnDeviceInput(const LinearWeight& w, const float* input, int64_t tokens,
                                                   cudaStream_t stream) {
  if (hooks_ == nullptr) return absl::OkStatus();
  const size_t n = static_cast<size_t>(tokens * w.in_features);
  host_.resize(n);
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_.data(), input, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return hooks_->OnInput(w, absl::MakeConstSpan(host_), tokens);
}

// ---------------------------------------------------------------------------------------------------------------
// CudaBlockWeights

absl::StatusOr<std::unique_ptr<CudaBlockWeights>> CudaBlockWeights::Create(const ModelSpec& spec,
                                                                           cuda::GemmPrecision precision,
                                                                           CudaContext* ctx) {
  std::unique_ptr<CudaBlockWeights> b(new CudaBlockWeights());
  b->spec_ = spec;
  b->precision_ = precision;
  b->ctx_ = ctx;
  const int64_t H = spec.hidden_size, Q = spec.q_size(), KV = spec.kv_size(), I = spec.intermediate_size;
  const bool bf16 = precision == cuda::GemmPrecision::kBf16;
  LLMC_ASSIGN_OR_RETURN(b->input_norm_, DeviceArray<float>::Create(H, "input_layernorm"));
  LLMC_ASSIGN_OR_RETURN(b->post_norm_, DeviceArray<float>::Create(H, "post_attention_layernorm"));
  if (spec.sandwich_norms) {
    LLMC_ASSIGN_OR_RETURN(b->pre_ff_norm_, DeviceArray<float>::Create(H, "pre_feedforward_layernorm"));
    LLMC_ASSIGN_OR_RETURN(b->post_ff_norm_, DeviceArray<float>::Create(H, "post_feedforward_layernorm"));
  }
  if (spec.qk_norm) {
    LLMC_ASSIGN_OR_RETURN(b->q_norm_, DeviceArray<float>::Create(spec.head_dim, "q_norm"));
    LLMC_ASSIGN_OR_RETURN(b->k_norm_, DeviceArray<float>::Create(spec.head_dim, "k_norm"));
  }
  struct Shape {
    Linear* l;
    const char* name;
    int64_t out, in;
    bool bias;
  };
  std::vector<Shape> shapes;
  if (spec.fused_projections) {  // q_ holds qkv_proj, gate_ holds gate_up_proj; k_, v_, up_ stay empty
    shapes = {{&b->q_, "self_attn.qkv_proj", Q + 2 * KV, H, spec.qkv_bias},
              {&b->o_, "self_attn.o_proj", H, Q, spec.o_bias},
              {&b->gate_, "mlp.gate_up_proj", 2 * I, H, spec.mlp_bias},
              {&b->down_, "mlp.down_proj", H, I, spec.mlp_bias}};
  } else {
    shapes = {{&b->q_, "self_attn.q_proj", Q, H, spec.qkv_bias},   {&b->k_, "self_attn.k_proj", KV, H, spec.qkv_bias},
              {&b->v_, "self_attn.v_proj", KV, H, spec.qkv_bias},  {&b->o_, "self_attn.o_proj", H, Q, spec.o_bias},
              {&b->gate_, "mlp.gate_proj", I, H, spec.mlp_bias}, {&b->up_, "mlp.up_proj", I, H, spec.mlp_bias},
              {&b->down_, "mlp.down_proj", H, I, spec.mlp_bias}};
  }
  int64_t largest = 0;
  for (const Shape& s : shapes) {
    s.l->meta.name = s.name;
    s.l->meta.out_features = s.out;
    s.l->meta.in_features = s.in;
    const std::string what = absl::StrCat(s.name, " weights");
    if (bf16) {
      LLMC_ASSIGN_OR_RETURN(s.l->w16, DeviceArray<uint16_t>::Create(s.out * s.in, what));
    } else {
      LLMC_ASSIGN_OR_RETURN(s.l->w32, DeviceArray<float>::Create(s.out * s.in, what));
    }
    if (s.bias) {
      LLMC_ASSIGN_OR_RETURN(s.l->bias, DeviceArray<float>::Create(s.out, absl::StrCat(s.name, " bias")));
    }
    largest = std::max(largest, s.out * s.in);
  }
  if (bf16) {
    LLMC_ASSIGN_OR_RETURN(b->staging_, DeviceArray<float>::Create(largest, "bf16 conversion staging"));
  }
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&b->ready_, cudaEventDisableTiming));
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&b->released_, cudaEventDisableTiming));
  return b;
}

CudaBlockWeights::~CudaBlockWeights() {
  // Buffers may still be read by queued work: wait before freeing them.
  if (ctx_ != nullptr) {
    cudaStreamSynchronize(ctx_->stream());
    cudaStreamSynchronize(ctx_->upload_stream());
  }
  if (ready_ != nullptr) cudaEventDestroy(ready_);
  if (released_ != nullptr) cudaEventDestroy(released_);
}

uint64_t CudaBlockWeights::device_bytes() const {
  uint64_t n = input_norm_.bytes() + post_norm_.bytes() + q_norm_.bytes() + k_norm_.bytes() + pre_ff_norm_.bytes() +
               post_ff_norm_.bytes() + staging_.bytes();
  for (const Linear* l : {&q_, &k_, &v_, &o_, &gate_, &up_, &down_})
    n += l->w32.bytes() + l->w16.bytes() + l->bias.bytes();
  return n;
}

namespace {

absl::Status CheckSize(const std::string& name, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) == want) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", got, " values, the model's block shape needs ", want,
                                                 "; the block does not belong to this model"));
}

template <typename T>
absl::Status CopyIn(DeviceArray<T>* dst, const std::vector<T>& src, cudaStream_t stream) {
  if (src.empty()) return absl::OkStatus();
  LLMC_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst->data(), src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBlockWeights::UploadLinear(const LinearWeight& src, Linear* dst) {
  const std::string name = src.name.empty() ? dst->meta.name : src.name;
  LLMC_RETURN_IF_ERROR(CheckSize(name + " weight", src.weight.size(), dst->meta.out_features * dst->meta.in_features));
  LLMC_RETURN_IF_ERROR(CheckSize(name + " bias", src.bias.size(), dst->bias.size()));
  dst->meta.name = src.name;
  dst->meta.layer = src.layer;
  cudaStream_t s = ctx_->upload_stream();
  if (precision_ == cuda::GemmPrecision::kBf16) {
    LLMC_RETURN_IF_ERROR(CopyIn(&staging_, src.weight, s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::FloatToBf16Device(staging_.data(), static_cast<int64_t>(src.weight.size()), dst->w16.data(), s));
  } else {
    LLMC_RETURN_IF_ERROR(CopyIn(&dst->w32, src.weight, s));
  }
  return CopyIn(&dst->bias, src.bias, s);
}

absl::Status CudaBlockWeights::Upload(const DecoderBlock& block) {
  cudaStream_t s = ctx_->upload_stream();
  LLMC_RETURN_IF_ERROR(CheckSize("input_layernorm", block.input_norm.size(), spec_.hidden_size));
  LLMC_RETURN_IF_ERROR(CheckSize("post_attention_layernorm", block.post_attention_norm.size(), spec_.hidden_size));
  LLMC_RETURN_IF_ERROR(CheckSize("q_norm", block.q_norm.size(), spec_.qk_norm ? spec_.head_dim : 0));
  LLMC_RETURN_IF_ERROR(CheckSize("k_norm", block.k_norm.size(), spec_.qk_norm ? spec_.head_dim : 0));
  const int64_t ff = spec_.sandwich_norms ? spec_.hidden_size : 0;
  LLMC_RETURN_IF_ERROR(CheckSize("pre_feedforward_layernorm", block.pre_feedforward_norm.size(), ff));
  LLMC_RETURN_IF_ERROR(CheckSize("post_feedforward_layernorm", block.post_feedforward_norm.size(), ff));
  // Do not overwrite weights a queued block still reads.
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(s, released_, 0));
  LLMC_RETURN_IF_ERROR(CopyIn(&input_norm_, block.input_norm, s));
  LLMC_RETURN_IF_ERROR(CopyIn(&post_norm_, block.post_attention_norm, s));
  LLMC_RETURN_IF_ERROR(CopyIn(&q_norm_, block.q_norm, s));
  LLMC_RETURN_IF_ERROR(CopyIn(&k_norm_, block.k_norm, s));
  LLMC_RETURN_IF_ERROR(CopyIn(&pre_ff_norm_, block.pre_feedforward_norm, s));
  LLMC_RETURN_IF_ERROR(CopyIn(&post_ff_norm_, block.post_feedforward_norm, s));
  if (block.fused() != spec_.fused_projections)
    return absl::InvalidArgumentError(absl::StrCat("layer ", block.layer, ": the block's projections are ",
                                                   block.fused() ? "fused" : "separate", ", the model's are not"));
  if (spec_.fused_projections) {
    const LinearWeight* src[] = {&block.qkv_proj, &block.o_proj, &block.gate_up_proj, &block.down_proj};
    Linear* dst[] = {&q_, &o_, &gate_, &down_};
    for (int i = 0; i < 4; ++i) LLMC_RETURN_IF_ERROR(UploadLinear(*src[i], dst[i]));
  } else {
    const LinearWeight* src[] = {&block.q_proj, &block.k_proj, &block.v_proj, &block.o_proj,
                                 &block.gate_proj, &block.up_proj, &block.down_proj};
    Linear* dst[] = {&q_, &k_, &v_, &o_, &gate_, &up_, &down_};
    for (int i = 0; i < 7; ++i) LLMC_RETURN_IF_ERROR(UploadLinear(*src[i], dst[i]));
  }
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventRecord(ready_, s));
  layer_ = block.layer;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------------------
// CudaBlockRunner

absl::StatusOr<std::unique_ptr<CudaBlockRunner>> CudaBlockRunner::Create(const ModelSpec& spec, CudaContext* ctx,
                                                                         const CudaBlockRunnerOptions& options) {
  std::unique_ptr<CudaBlockRunner> r(new CudaBlockRunner());
  r->spec_ = spec;
  r->ctx_ = ctx;
  r->options_ = options;
  if (r->options_.max_chunk_tokens < 1) r->options_.max_chunk_tokens = 1;
  return r;
}

uint64_t CudaBlockRunner::scratch_bytes() const {
  return normed_.bytes() + q_.bytes() + k_.bytes() + v_.bytes() + attn_.bytes() + gate_.bytes() + up_.bytes() +
         proj_.bytes() + fused_.bytes() + xb_.bytes() + rope_cos_.bytes() + rope_sin_.bytes() + rope_local_cos_.bytes() +
         rope_local_sin_.bytes();
}

absl::Status CudaBlockRunner::Reserve(int64_t rows, int64_t seq_len, cuda::GemmPrecision precision) {
  const int64_t H = spec_.hidden_size, Q = spec_.q_size(), KV = spec_.kv_size(), I = spec_.intermediate_size;
  LLMC_RETURN_IF_ERROR(normed_.Reserve(rows * H, "block scratch (normed)"));
  LLMC_RETURN_IF_ERROR(q_.Reserve(rows * Q, "block scratch (q)"));
  LLMC_RETURN_IF_ERROR(k_.Reserve(rows * KV, "block scratch (k)"));
  LLMC_RETURN_IF_ERROR(v_.Reserve(rows * KV, "block scratch (v)"));
  LLMC_RETURN_IF_ERROR(attn_.Reserve(rows * Q, "block scratch (attention)"));
  LLMC_RETURN_IF_ERROR(gate_.Reserve(rows * I, "block scratch (gate)"));
  LLMC_RETURN_IF_ERROR(up_.Reserve(rows * I, "block scratch (up)"));
  LLMC_RETURN_IF_ERROR(proj_.Reserve(rows * H, "block scratch (projection)"));
  if (spec_.fused_projections)
    LLMC_RETURN_IF_ERROR(fused_.Reserve(rows * std::max(Q + 2 * KV, 2 * I), "block scratch (fused projection)"));
  // Reserved up front: growing it between the GEMMs of one chunk would free a buffer queued work still reads.
  if (precision == cuda::GemmPrecision::kBf16)
    LLMC_RETURN_IF_ERROR(xb_.Reserve(rows * std::max({H, Q, I}), "block scratch (bf16 input)"));
  // A longrope table is built for one sequence length's factors (RopeTable); rebuilt when that choice changes.
  if (seq_len > rope_positions_ || spec_.rope.UsesLongFactors(seq_len) != rope_long_) {
    const int64_t n = seq_len * (spec_.rotary_dim() / 2);
    cudaStream_t s = ctx_->stream();
    auto upload = [&](const RopeSpec& rope, DeviceArray<float>* cos, DeviceArray<float>* sin) -> absl::Status {
      RopeTable table(rope, spec_.rotary_dim(), seq_len);
      LLMC_RETURN_IF_ERROR(cos->Reserve(n, "RoPE table"));
      LLMC_RETURN_IF_ERROR(sin->Reserve(n, "RoPE table"));
      LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(cos->data(), table.cos(0), n * sizeof(float), cudaMemcpyHostToDevice, s));
      LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(sin->data(), table.sin(0), n * sizeof(float), cudaMemcpyHostToDevice, s));
      return ctx_->Synchronize();  // `table` goes out of scope
    };
    LLMC_RETURN_IF_ERROR(upload(spec_.rope, &rope_cos_, &rope_sin_));
    if (spec_.local_rope) LLMC_RETURN_IF_ERROR(upload(spec_.rope_local, &rope_local_cos_, &rope_local_sin_));
    rope_positions_ = seq_len;
    rope_long_ = spec_.rope.UsesLongFactors(seq_len);
  }
  return absl::OkStatus();
}

absl::StatusOr<const uint16_t*> CudaBlockRunner::ToBf16(cuda::GemmPrecision p, const float* x, int64_t n) {
  if (p != cuda::GemmPrecision::kBf16) return nullptr;
  if (n > xb_.size()) return absl::InternalError("CudaBlockRunner: bf16 scratch was not reserved");
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(x, n, xb_.data(), ctx_->stream()));
  return static_cast<const uint16_t*>(xb_.data());
}

absl::Status CudaBlockRunner::Linear(const CudaBlockWeights::Linear& l, cuda::GemmPrecision precision,
                                     const float* x, const uint16_t* xb, int64_t rows, float* y,
                                     CudaLinearHooks* hooks) {
  if (hooks != nullptr) LLMC_RETURN_IF_ERROR(hooks->OnDeviceInput(l.meta, x, rows, ctx_->stream()));
  LLMC_CUDA_STR_RETURN_IF_ERROR(ctx_->blas()->Linear(precision, x, xb, rows, l.meta.in_features, l.weight(),
                                                     l.bias_or_null(), l.meta.out_features, y));
  return absl::OkStatus();
}

absl::Status CudaBlockRunner::CopyColumns(const float* src, int64_t rows, int64_t src_width, int64_t col0,
                                          int64_t width, float* dst) {
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(dst, width * sizeof(float), src + col0, src_width * sizeof(float),
                                              width * sizeof(float), rows, cudaMemcpyDeviceToDevice, ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBlockRunner::Run(CudaBlockWeights* w, DeviceHiddenStates* x, CudaLinearHooks* hooks) {
  const ModelSpec& spec = spec_;
  const int64_t T = x->seq_len, H = spec.hidden_size, Q = spec.q_size(), I = spec.intermediate_size;
  const int64_t KV = spec.kv_size();
  if (x->hidden != H)
    return absl::InvalidArgumentError(
        absl::StrCat("CudaBlockRunner::Run: hidden states have width ", x->hidden, ", the model ", H));
  if (w->layer_ < 0) return absl::FailedPreconditionError("CudaBlockRunner::Run: the weights were never uploaded");
  if (x->num_seqs == 0) return absl::OkStatus();
  const float eps = static_cast<float>(spec.rms_norm_eps);
  const int64_t chunk_seqs =
      std::max<int64_t>(1, std::min(x->num_seqs, options_.max_chunk_tokens / std::max<int64_t>(T, 1)));
  const cuda::GemmPrecision p = w->precision_;
  LLMC_RETURN_IF_ERROR(Reserve(chunk_seqs * T, T, p));
  cudaStream_t s = ctx_->stream();
  auto xb_or = [&](const float* in, int64_t n) { return ToBf16(p, in, n); };
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(s, w->ready_, 0));
  const int layer = w->layer_;
  const bool local = spec.local_rope && &spec.rope_for(layer) == &spec.rope_local;
  const float* rope_cos = local ? rope_local_cos_.data() : rope_cos_.data();
  const float* rope_sin = local ? rope_local_sin_.data() : rope_sin_.data();
  for (int64_t s0 = 0; s0 < x->num_seqs; s0 += chunk_seqs) {
    const int64_t seqs = std::min(chunk_seqs, x->num_seqs - s0);
    const int64_t rows = seqs * T;
    float* xc = x->row(s0 * T);
    // Attention.
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(xc, rows, H, w->input_norm_.data(), eps, normed_.data(), s));
    LLMC_ASSIGN_OR_RETURN(const uint16_t* nb, xb_or(normed_.data(), rows * H));
    if (spec.fused_projections) {
      LLMC_RETURN_IF_ERROR(Linear(w->q_, p, normed_.data(), nb, rows, fused_.data(), hooks));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, Q + 2 * KV, 0, Q, q_.data()));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, Q + 2 * KV, Q, KV, k_.data()));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, Q + 2 * KV, Q + KV, KV, v_.data()));
    } else {
      LLMC_RETURN_IF_ERROR(Linear(w->q_, p, normed_.data(), nb, rows, q_.data(), hooks));
      LLMC_RETURN_IF_ERROR(Linear(w->k_, p, normed_.data(), nb, rows, k_.data(), hooks));
      LLMC_RETURN_IF_ERROR(Linear(w->v_, p, normed_.data(), nb, rows, v_.data(), hooks));
    }
    if (spec.qk_norm) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(q_.data(), rows * spec.num_heads, spec.head_dim,
                                                        w->q_norm_.data(), eps, q_.data(), s));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(k_.data(), rows * spec.num_kv_heads, spec.head_dim,
                                                        w->k_norm_.data(), eps, k_.data(), s));
    }
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RopeDevice(q_.data(), seqs, T, spec.num_heads, spec.head_dim,
                                                   rope_cos, rope_sin, s, spec.rotary_dim()));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RopeDevice(k_.data(), seqs, T, spec.num_kv_heads, spec.head_dim,
                                                   rope_cos, rope_sin, s, spec.rotary_dim()));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::CausalAttentionDevice(
        q_.data(), k_.data(), v_.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
        spec.window(layer), attn_.data(), s, spec.softmax_scale(), spec.attention_softcap));
    LLMC_ASSIGN_OR_RETURN(const uint16_t* ab, xb_or(attn_.data(), rows * Q));
    LLMC_RETURN_IF_ERROR(Linear(w->o_, p, attn_.data(), ab, rows, proj_.data(), hooks));
    if (spec.sandwich_norms)
      LLMC_CUDA_STR_RETURN_IF_ERROR(
          cuda::RmsNormDevice(proj_.data(), rows, H, w->post_norm_.data(), eps, proj_.data(), s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::AddDevice(xc, proj_.data(), rows * H, s));
    // MLP.
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(
        xc, rows, H, spec.sandwich_norms ? w->pre_ff_norm_.data() : w->post_norm_.data(), eps, normed_.data(), s));
    LLMC_ASSIGN_OR_RETURN(const uint16_t* mb, xb_or(normed_.data(), rows * H));
    if (spec.fused_projections) {
      LLMC_RETURN_IF_ERROR(Linear(w->gate_, p, normed_.data(), mb, rows, fused_.data(), hooks));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, 2 * I, 0, I, gate_.data()));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, 2 * I, I, I, up_.data()));
    } else {
      LLMC_RETURN_IF_ERROR(Linear(w->gate_, p, normed_.data(), mb, rows, gate_.data(), hooks));
      LLMC_RETURN_IF_ERROR(Linear(w->up_, p, normed_.data(), mb, rows, up_.data(), hooks));
    }
    if (spec.activation == Activation::kGeluTanh) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::GeluTanhGluDevice(gate_.data(), up_.data(), rows * I, gate_.data(), s));
    } else {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::SwiGluDevice(gate_.data(), up_.data(), rows * I, gate_.data(), s));
    }
    LLMC_ASSIGN_OR_RETURN(const uint16_t* gb, xb_or(gate_.data(), rows * I));
    LLMC_RETURN_IF_ERROR(Linear(w->down_, p, gate_.data(), gb, rows, proj_.data(), hooks));
    if (spec.sandwich_norms)
      LLMC_CUDA_STR_RETURN_IF_ERROR(
          cuda::RmsNormDevice(proj_.data(), rows, H, w->post_ff_norm_.data(), eps, proj_.data(), s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::AddDevice(xc, proj_.data(), rows * H, s));
  }
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventRecord(w->released_, s));
  return absl::OkStatus();
}

}  // namespace llmc
