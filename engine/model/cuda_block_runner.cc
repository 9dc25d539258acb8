#include "engine/model/cuda_block_runner.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "engine/backend/cuda/activation_quant_kernels.h"
#include "engine/backend/cuda/attention_kernels.h"
#include "engine/backend/cuda/model_kernels.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/cuda_status.h"
#include "engine/tensor/dtype.h"

namespace llmc {

absl::Status HostLinearHooksAdapter::OnDeviceInput(const LinearWeight& w, const float* input,
                                                   const uint16_t* /*input_bf16*/, int64_t tokens,
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
  int64_t largest = 0;
  if (spec.fused_projections) {  // q_ holds qkv_proj, gate_ holds gate_up_proj; k_, v_, up_ stay empty
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->q_, "self_attn.qkv_proj", Q + 2 * KV, H, spec.qkv_bias, &largest));
  } else {
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->q_, "self_attn.q_proj", Q, H, spec.qkv_bias, &largest));
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->k_, "self_attn.k_proj", KV, H, spec.qkv_bias, &largest));
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->v_, "self_attn.v_proj", KV, H, spec.qkv_bias, &largest));
  }
  LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->o_, "self_attn.o_proj", H, Q, spec.o_bias, &largest));
  const MoeSpec& moe = spec.moe;
  bool any_dense = !moe.enabled(), any_sparse = false;
  for (int64_t l = 0; l < spec.num_layers; ++l) (moe.IsSparse(static_cast<int>(l)) ? any_sparse : any_dense) = true;
  if (any_dense && spec.fused_projections) {
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->gate_, "mlp.gate_up_proj", 2 * I, H, spec.mlp_bias, &largest));
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->down_, "mlp.down_proj", H, I, spec.mlp_bias, &largest));
  } else if (any_dense) {
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->gate_, "mlp.gate_proj", I, H, spec.mlp_bias, &largest));
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->up_, "mlp.up_proj", I, H, spec.mlp_bias, &largest));
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->down_, "mlp.down_proj", H, I, spec.mlp_bias, &largest));
  }
  if (any_sparse) {
    const int64_t E = moe.num_experts, IE = moe.expert_intermediate, IS = moe.shared_intermediate;
    LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->router_, "router", E, H, false, &largest));
    b->expert_gate_.resize(E);
    b->expert_up_.resize(E);
    b->expert_down_.resize(E);
    for (int64_t e = 0; e < E; ++e) {
      LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->expert_gate_[e], "expert gate", IE, H, false, &largest));
      LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->expert_up_[e], "expert up", IE, H, false, &largest));
      LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->expert_down_[e], "expert down", H, IE, false, &largest));
    }
    if (IS > 0) {
      LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->shared_gate_, "shared_expert.gate_proj", IS, H, false, &largest));
      LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->shared_up_, "shared_expert.up_proj", IS, H, false, &largest));
      LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->shared_down_, "shared_expert.down_proj", H, IS, false, &largest));
      if (moe.style != MoeStyle::kLlama4)  // Llama 4's shared expert is ungated
        LLMC_RETURN_IF_ERROR(b->CreateLinear(&b->shared_expert_gate_, "shared_expert_gate", 1, H, false, &largest));
    }
  }
  b->largest_ = largest;
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&b->ready_, cudaEventDisableTiming));
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&b->released_, cudaEventDisableTiming));
  return b;
}

absl::Status CudaBlockWeights::CreateLinear(Linear* l, const std::string& name, int64_t out, int64_t in, bool bias,
                                           int64_t* largest) {
  l->meta.name = name;
  l->meta.out_features = out;
  l->meta.in_features = in;
  const std::string what = absl::StrCat(name, " weights");
  if (precision_ == cuda::GemmPrecision::kBf16) {
    LLMC_ASSIGN_OR_RETURN(l->w16, DeviceArray<uint16_t>::Create(out * in, what));
  } else {
    LLMC_ASSIGN_OR_RETURN(l->w32, DeviceArray<float>::Create(out * in, what));
  }
  if (bias) {
    LLMC_ASSIGN_OR_RETURN(l->bias, DeviceArray<float>::Create(out, absl::StrCat(name, " bias")));
  }
  *largest = std::max(*largest, out * in);
  return absl::OkStatus();
}

CudaBlockWeights::~CudaBlockWeights() {
  // Buffers may still be read by queued work: wait before freeing them.
  if (ctx_ != nullptr) {
    cudaStreamSynchronize(ctx_->stream());
    cudaStreamSynchronize(ctx_->upload_stream());
  }
  if (ready_ != nullptr) cudaEventDestroy(ready_);
  if (released_ != nullptr) cudaEventDestroy(released_);
  for (Stage& st : stages_) {
    if (st.done != nullptr) cudaEventDestroy(st.done);
    if (st.host != nullptr) cudaFreeHost(st.host);
  }
}

uint64_t CudaBlockWeights::device_bytes() const {
  uint64_t n = input_norm_.bytes() + post_norm_.bytes() + q_norm_.bytes() + k_norm_.bytes() + pre_ff_norm_.bytes() +
               post_ff_norm_.bytes() + staging_.bytes();
  std::vector<const Linear*> all = {&q_, &k_, &v_, &o_, &gate_, &up_, &down_, &router_,
                                    &shared_gate_, &shared_up_, &shared_down_, &shared_expert_gate_};
  for (const auto* v : {&expert_gate_, &expert_up_, &expert_down_})
    for (const Linear& l : *v) all.push_back(&l);
  for (const Linear* l : all) n += l->w32.bytes() + l->w16.bytes() + l->bias.bytes();
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

absl::StatusOr<cuda::ActivationQuantParams> ActivationQuantDeviceParams(const ActivationQuantizer& q) {
  cuda::ActivationQuantParams p;
  p.kind = q.kind() == ActivationQuantizer::Kind::kInt ? 0 : q.kind() == ActivationQuantizer::Kind::kFp8 ? 1 : 2;
  p.round = q.dtype() == DType::kBF16 ? 1 : q.dtype() == DType::kF16 ? 2 : 0;
  p.dynamic = q.dynamic();
  p.cols = q.cols();
  p.group_cols = q.group_cols();
  p.qmin = q.qmin();
  p.qmax = q.qmax();
  p.global_scale = q.global_scale();
  p.dtype_eps = q.DynamicScale(0.0f, 0.0f);  // a zero range gives the eps (int/fp8; unused for NVFP4)
  const auto& st = q.static_scales();
  if (st.size() > static_cast<size_t>(cuda::kMaxStaticActivationScales))
    return absl::UnimplementedError(absl::StrCat(q.where(), ": ", st.size(), " static scales; the CUDA runtime takes at most ",
                                                 cuda::kMaxStaticActivationScales, "; use --device cpu"));
  p.num_static = static_cast<int>(st.size());
  for (size_t i = 0; i < st.size(); ++i) p.static_scales[i] = st[i];
  return p;
}

absl::Status CudaBlockWeights::UploadLinear(const LinearWeight& src, Linear* dst) {
  const std::string name = src.name.empty() ? dst->meta.name : src.name;
  LLMC_RETURN_IF_ERROR(CheckSize(name + " weight", src.weight.size(), dst->meta.out_features * dst->meta.in_features));
  LLMC_RETURN_IF_ERROR(CheckSize(name + " bias", src.bias.size(), dst->bias.size()));
  dst->meta.name = src.name;
  dst->meta.layer = src.layer;
  dst->meta.input_quant = src.input_quant;
  dst->meta.output_quant = src.output_quant;
  LLMC_RETURN_IF_ERROR(CopyWeights(src.weight, dst));
  return CopyIn(&dst->bias, src.bias, ctx_->upload_stream());
}

namespace {
constexpr size_t kStageBytes = size_t{32} << 20;
constexpr int kNumStages = 4;
}  // namespace

absl::Status CudaBlockWeights::CopyWeights(const std::vector<float>& src, Linear* dst) {
  if (src.empty()) return absl::OkStatus();
  cudaStream_t s = ctx_->upload_stream();
  const bool bf16 = precision_ == cuda::GemmPrecision::kBf16;
  if (stages_.empty() && !pageable_) {
    for (int i = 0; i < kNumStages && !pageable_; ++i) {
      Stage st;
      if (cudaHostAlloc(&st.host, kStageBytes, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();  // clear it: later calls must not report the failed allocation
        pageable_ = true;
        break;
      }
      if (cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming) != cudaSuccess) {
        cudaFreeHost(st.host);
        return absl::InternalError("cudaEventCreateWithFlags failed for the weight upload");
      }
      stages_.push_back(st);
    }
    if (pageable_) {
      for (Stage& st : stages_) {
        cudaEventDestroy(st.done);
        cudaFreeHost(st.host);
      }
      stages_.clear();
    }
  }
  if (pageable_) {
    if (!bf16) return CopyIn(&dst->w32, src, s);
    if (staging_.size() == 0) LLMC_RETURN_IF_ERROR(staging_.Reserve(largest_, "bf16 conversion staging"));
    LLMC_RETURN_IF_ERROR(CopyIn(&staging_, src, s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::FloatToBf16Device(staging_.data(), static_cast<int64_t>(src.size()), dst->w16.data(), s));
    return absl::OkStatus();
  }
  const size_t elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  char* dev = bf16 ? reinterpret_cast<char*>(dst->w16.data()) : reinterpret_cast<char*>(dst->w32.data());
  const int64_t n = static_cast<int64_t>(src.size()), per = static_cast<int64_t>(kStageBytes / elem);
  const int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency() / 2, 1u, 8u));
  for (int64_t i0 = 0; i0 < n; i0 += per) {
    const int64_t m = std::min(per, n - i0);
    Stage& st = stages_[next_stage_];
    next_stage_ = (next_stage_ + 1) % stages_.size();
    LLMC_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(st.done));  // the copy that last read this piece has finished
    const float* from = src.data() + i0;
    if (bf16) {
      uint16_t* to = static_cast<uint16_t*>(st.host);
      const int64_t each = (m + threads - 1) / threads;
      LLMC_RETURN_IF_ERROR(ParallelFor(threads, threads, [&](int64_t t) {
        const int64_t end = std::min(m, (t + 1) * each);
        for (int64_t i = t * each; i < end; ++i) to[i] = FloatToBF16(from[i]);
        return absl::OkStatus();
      }));
    } else {
      ParallelCopy(st.host, from, static_cast<size_t>(m) * sizeof(float), threads);
    }
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev + i0 * elem, st.host, m * elem, cudaMemcpyHostToDevice, s));
    LLMC_CUDA_RETURN_IF_ERROR(cudaEventRecord(st.done, s));
  }
  return absl::OkStatus();
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
  std::vector<std::pair<const LinearWeight*, Linear*>> pairs;
  if (spec_.fused_projections)  // q_ holds qkv_proj, gate_ holds gate_up_proj; k_, v_, up_ stay empty
    pairs = {{&block.qkv_proj, &q_}, {&block.o_proj, &o_}};
  else
    pairs = {{&block.q_proj, &q_}, {&block.k_proj, &k_}, {&block.v_proj, &v_}, {&block.o_proj, &o_}};
  const MoeMlp& moe = block.moe;
  if (moe.active()) {
    if (expert_gate_.empty() || moe.gate.size() != expert_gate_.size() ||
        moe.has_shared() != (shared_gate_.meta.out_features > 0))
      return absl::InvalidArgumentError(absl::StrCat("layer ", block.layer, ": its ", moe.gate.size(),
                                                     " experts do not match the model's block shape"));
    pairs.push_back({&moe.router, &router_});
    for (size_t e = 0; e < moe.gate.size(); ++e) {
      pairs.push_back({&moe.gate[e], &expert_gate_[e]});
      pairs.push_back({&moe.up[e], &expert_up_[e]});
      pairs.push_back({&moe.down[e], &expert_down_[e]});
    }
    if (moe.has_shared()) {
      pairs.push_back({&moe.shared_gate, &shared_gate_});
      pairs.push_back({&moe.shared_up, &shared_up_});
      pairs.push_back({&moe.shared_down, &shared_down_});
      if (moe.has_shared_gate() != (shared_expert_gate_.meta.out_features > 0))
        return absl::InvalidArgumentError(absl::StrCat("layer ", block.layer, ": its shared expert's gate does not ",
                                                       "match the model's block shape"));
      if (moe.has_shared_gate()) pairs.push_back({&moe.shared_expert_gate, &shared_expert_gate_});
    }
  } else {
    if (gate_.meta.out_features == 0)
      return absl::InvalidArgumentError(absl::StrCat("layer ", block.layer, ": a dense MLP in a model whose layers ",
                                                     "are all mixture-of-experts"));
    if (spec_.fused_projections)
      pairs.insert(pairs.end(), {{&block.gate_up_proj, &gate_}, {&block.down_proj, &down_}});
    else
      pairs.insert(pairs.end(), {{&block.gate_proj, &gate_}, {&block.up_proj, &up_}, {&block.down_proj, &down_}});
  }
  for (auto& [src, dst] : pairs) LLMC_RETURN_IF_ERROR(UploadLinear(*src, dst));
  moe_layer_ = moe.active();
  k_cache_quant_ = block.k_cache_quant;
  v_cache_quant_ = block.v_cache_quant;
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

CudaBlockRunner::~CudaBlockRunner() {
  if (marks_.empty()) return;
  cudaStreamSynchronize(ctx_->stream());  // queued records still name the events
  for (auto& m : marks_) cudaEventDestroy(m.second);
}

absl::Status CudaBlockRunner::Mark(const char* stage) {
  if (!options_.profile) return absl::OkStatus();
  if (marks_used_ == marks_.size()) {
    cudaEvent_t e = nullptr;
    LLMC_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    marks_.push_back({nullptr, e});
  }
  marks_[marks_used_].first = stage;
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventRecord(marks_[marks_used_].second, ctx_->stream()));
  ++marks_used_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, double>>> CudaBlockRunner::TakeStageMilliseconds() {
  std::vector<std::pair<std::string, double>> out;
  if (marks_used_ == 0) return out;
  LLMC_RETURN_IF_ERROR(ctx_->Synchronize());
  for (size_t i = 1; i < marks_used_; ++i) {
    const char* stage = marks_[i].first;
    if (stage == nullptr) continue;  // a Run's first mark: the gap before it is not the block's
    float ms = 0.0f;
    LLMC_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second));
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == stage; });
    if (it == out.end()) out.push_back({stage, ms});
    else it->second += ms;
  }
  marks_used_ = 0;
  return out;
}

uint64_t CudaBlockRunner::scratch_bytes() const {
  return normed_.bytes() + q_.bytes() + k_.bytes() + v_.bytes() + attn_.bytes() + gate_.bytes() + up_.bytes() +
         proj_.bytes() + fused_.bytes() + xb_.bytes() + scores_.bytes() + qin_.bytes() + qinb_.bytes() + rope_cos_.bytes() +
         rope_sin_.bytes() + rope_local_cos_.bytes() + rope_local_sin_.bytes() + logits_.bytes() + xg_.bytes() +
         ye_.bytes() + scales_.bytes() + rows_idx_.bytes() + ones_.bytes() + temperatures_.bytes();
}

absl::Status CudaBlockRunner::Reserve(int64_t rows, int64_t seq_len, cuda::GemmPrecision precision) {
  const int64_t H = spec_.hidden_size, Q = spec_.q_size(), KV = spec_.kv_size();
  const MoeSpec& moe = spec_.moe;
  const int64_t I = std::max({spec_.intermediate_size, moe.expert_intermediate, moe.shared_intermediate});
  if (moe.enabled()) {
    LLMC_RETURN_IF_ERROR(logits_.Reserve(rows * std::max<int64_t>(moe.num_experts, 1), "MoE scratch (router)"));
    LLMC_RETURN_IF_ERROR(xg_.Reserve(rows * H, "MoE scratch (gathered inputs)"));
    LLMC_RETURN_IF_ERROR(ye_.Reserve(rows * H, "MoE scratch (expert outputs)"));
    LLMC_RETURN_IF_ERROR(scales_.Reserve(rows * (moe.top_k + 1), "MoE scratch (routing weights)"));
    LLMC_RETURN_IF_ERROR(rows_idx_.Reserve(rows * (moe.top_k + 1), "MoE scratch (routed tokens)"));
  }
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
  if (precision == cuda::GemmPrecision::kBf16) {
    // Also q, k and v side by side for the flash attention.
    LLMC_RETURN_IF_ERROR(xb_.Reserve(rows * std::max({H, Q + 2 * KV, I}), "block scratch (bf16 input)"));
    // Head widths the flash kernel does not take go through scores of up to kAttentionScoreElems floats (256 MiB)
    // per chunk of query rows, at least one row.
    if (!cuda::FlashAttentionBf16Supports(spec_.head_dim)) {
      constexpr int64_t kAttentionScoreElems = int64_t{64} << 20;
      const int64_t per_row = spec_.num_heads * seq_len;
      LLMC_RETURN_IF_ERROR(scores_.Reserve(
          per_row *
              std::max<int64_t>(1, cuda::Blas::AttentionChunkRows(seq_len, spec_.num_heads, kAttentionScoreElems)),
          "block scratch (attention scores)"));
    }
  }
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

absl::Status CudaBlockRunner::ReserveLlama4(int64_t n, int64_t T) {
  cudaStream_t s = ctx_->stream();
  n = std::max(n, spec_.head_dim);
  if (n > ones_filled_) {
    LLMC_RETURN_IF_ERROR(ones_.Reserve(n, "Llama 4 scratch (ones)"));
    const std::vector<float> ones(n, 1.0f);
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ones_.data(), ones.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
    LLMC_RETURN_IF_ERROR(ctx_->Synchronize());  // `ones` goes out of scope
    ones_filled_ = n;
  }
  if (spec_.temperature_attn_scale > 0 && T != temperature_positions_) {
    int no_rope = -1;  // the temperatures are the same on every no-rope layer
    for (int l = 0; l < spec_.num_layers && no_rope < 0; ++l)
      if (!spec_.uses_rope(l)) no_rope = l;
    if (no_rope >= 0) {
      std::vector<float> t(T);
      for (int64_t p = 0; p < T; ++p) t[p] = spec_.query_temperature(no_rope, p);
      LLMC_RETURN_IF_ERROR(temperatures_.Reserve(T, "Llama 4 scratch (query temperatures)"));
      LLMC_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(temperatures_.data(), t.data(), T * sizeof(float), cudaMemcpyHostToDevice, s));
      LLMC_RETURN_IF_ERROR(ctx_->Synchronize());
    }
    temperature_positions_ = T;
  }
  return absl::OkStatus();
}

absl::StatusOr<const uint16_t*> CudaBlockRunner::ToBf16(cuda::GemmPrecision p, const float* x, int64_t n) {
  if (p != cuda::GemmPrecision::kBf16) return nullptr;
  if (n > xb_.size()) return absl::InternalError("CudaBlockRunner: bf16 scratch was not reserved");
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(x, n, xb_.data(), ctx_->stream()));
  return static_cast<const uint16_t*>(xb_.data());
}

absl::Status CudaBlockRunner::Quantize(const ActivationQuantizer& q, const float* x, float* y, int64_t rows) {
  LLMC_ASSIGN_OR_RETURN(cuda::ActivationQuantParams p, ActivationQuantDeviceParams(q));
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FakeQuantActivationsDevice(x, y, rows, p, ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBlockRunner::Linear(const CudaBlockWeights::Linear& l, cuda::GemmPrecision precision,
                                     const float* x, const uint16_t* xb, int64_t rows, float* y,
                                     CudaLinearHooks* hooks) {
  if (hooks != nullptr) LLMC_RETURN_IF_ERROR(hooks->OnDeviceInput(l.meta, x, xb, rows, ctx_->stream()));
  if (l.meta.input_quant != nullptr) {
    const int64_t n = rows * l.meta.in_features;
    if (n > qin_.size()) return absl::InternalError("CudaBlockRunner: quantized-input scratch was not reserved");
    LLMC_RETURN_IF_ERROR(Quantize(*l.meta.input_quant, x, qin_.data(), rows));
    x = qin_.data();
    xb = nullptr;
    if (precision == cuda::GemmPrecision::kBf16) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(qin_.data(), n, qinb_.data(), ctx_->stream()));
      xb = qinb_.data();
    }
  }
  LLMC_CUDA_STR_RETURN_IF_ERROR(ctx_->blas()->Linear(precision, x, xb, rows, l.meta.in_features, l.weight(),
                                                     l.bias_or_null(), l.meta.out_features, y));
  if (l.meta.output_quant != nullptr) LLMC_RETURN_IF_ERROR(Quantize(*l.meta.output_quant, y, y, rows));
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
  const bool llama4 = spec.arch != nullptr && spec.arch->llama4;
  if (llama4) LLMC_RETURN_IF_ERROR(ReserveLlama4(chunk_seqs * T, T));
  bool quantized_input = false;
  int64_t widest_input = std::max({H, Q, I});
  std::vector<const CudaBlockWeights::Linear*> all = {&w->q_,    &w->k_,  &w->v_,   &w->o_,
                                                      &w->gate_, &w->up_, &w->down_};
  for (const std::vector<CudaBlockWeights::Linear>* experts : {&w->expert_gate_, &w->expert_up_, &w->expert_down_})
    for (const CudaBlockWeights::Linear& l : *experts) all.push_back(&l);
  for (const CudaBlockWeights::Linear* l : {&w->router_, &w->shared_gate_, &w->shared_up_, &w->shared_down_,
                                            &w->shared_expert_gate_})
    all.push_back(l);
  for (const CudaBlockWeights::Linear* l : all) {
    if (l->meta.input_quant == nullptr) continue;
    quantized_input = true;
    widest_input = std::max(widest_input, l->meta.in_features);
  }
  if (quantized_input) {  // up front, like the other scratch
    const int64_t n = chunk_seqs * T * widest_input;
    LLMC_RETURN_IF_ERROR(qin_.Reserve(n, "block scratch (quantized input)"));
    if (p == cuda::GemmPrecision::kBf16) LLMC_RETURN_IF_ERROR(qinb_.Reserve(n, "block scratch (quantized input, bf16)"));
  }
  cudaStream_t s = ctx_->stream();
  auto xb_or = [&](const float* in, int64_t n) { return ToBf16(p, in, n); };
  // bf16 mode: the norms and the MLP activation write the bf16 copy their GEMMs read straight into xb_, and their
  // fp32 output only where something reads it (hooks that want fp32 inputs, quantized inputs, the MoE MLP).
  const bool bf16 = p == cuda::GemmPrecision::kBf16;
  const bool fp32_inputs = !bf16 || quantized_input || (hooks != nullptr && hooks->NeedsFp32Input());
  auto bf16_out = [&](int64_t n) -> absl::StatusOr<uint16_t*> {
    if (!bf16) return nullptr;
    if (n > xb_.size()) return absl::InternalError("CudaBlockRunner: bf16 scratch was not reserved");
    return xb_.data();
  };
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(s, w->ready_, 0));
  const int layer = w->layer_;
  const bool local = spec.local_rope && &spec.rope_for(layer) == &spec.rope_local;
  const float* rope_cos = local ? rope_local_cos_.data() : rope_cos_.data();
  const float* rope_sin = local ? rope_local_sin_.data() : rope_sin_.data();
  LLMC_RETURN_IF_ERROR(Mark(nullptr));
  for (int64_t s0 = 0; s0 < x->num_seqs; s0 += chunk_seqs) {
    const int64_t seqs = std::min(chunk_seqs, x->num_seqs - s0);
    const int64_t rows = seqs * T;
    float* xc = x->row(s0 * T);
    // Attention.
    LLMC_ASSIGN_OR_RETURN(uint16_t* nb, bf16_out(rows * H));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(xc, rows, H, w->input_norm_.data(), eps,
                                                      fp32_inputs ? normed_.data() : nullptr, s, nb));
    LLMC_RETURN_IF_ERROR(Mark("input norm"));
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
    LLMC_RETURN_IF_ERROR(Mark("q/k/v projections"));
    if (spec.qk_norm) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(q_.data(), rows * spec.num_heads, spec.head_dim,
                                                        w->q_norm_.data(), eps, q_.data(), s));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(k_.data(), rows * spec.num_kv_heads, spec.head_dim,
                                                        w->k_norm_.data(), eps, k_.data(), s));
    }
    // engine/model/attention_inputs.h: Llama 4's rope layers rotate interleaved pairs and then L2-normalize q and k;
    // its no-rope layers scale q by position.
    if (spec.uses_rope(layer)) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RopeDevice(q_.data(), seqs, T, spec.num_heads, spec.head_dim, rope_cos,
                                                     rope_sin, s, spec.rotary_dim(), spec.rope_interleaved));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RopeDevice(k_.data(), seqs, T, spec.num_kv_heads, spec.head_dim, rope_cos,
                                                     rope_sin, s, spec.rotary_dim(), spec.rope_interleaved));
      if (spec.l2_qk_norm) {
        LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(q_.data(), rows * spec.num_heads, spec.head_dim,
                                                          ones_.data(), eps, q_.data(), s));
        LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(k_.data(), rows * spec.num_kv_heads, spec.head_dim,
                                                          ones_.data(), eps, k_.data(), s));
      }
    } else if (spec.temperature_attn_scale > 0) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(
          cuda::ScaleRowsPeriodicDevice(q_.data(), rows, Q, temperatures_.data(), T, s));
    }
    LLMC_RETURN_IF_ERROR(Mark("q/k norms and rope"));
    // The kv cache as the library quantizes it: k after the rotary embedding, v as projected.
    if (w->k_cache_quant_ != nullptr) LLMC_RETURN_IF_ERROR(Quantize(*w->k_cache_quant_, k_.data(), k_.data(), rows));
    if (w->v_cache_quant_ != nullptr) LLMC_RETURN_IF_ERROR(Quantize(*w->v_cache_quant_, v_.data(), v_.data(), rows));
    // bf16 mode: attention on bf16 tensor cores (flash kernel; head widths it does not take: TF32 GEMMs over a
    // score buffer); otherwise the fp32 flash kernel.
    if (p == cuda::GemmPrecision::kBf16 && cuda::FlashAttentionBf16Supports(spec.head_dim)) {
      // bf16 copies of q, k and v, one after the other in xb_ (free again once the projections have read it).
      if (rows * (Q + 2 * KV) > xb_.size())
        return absl::InternalError("CudaBlockRunner: bf16 scratch too small for q, k and v");
      uint16_t* qb = xb_.data();
      uint16_t* kb = qb + rows * Q;
      uint16_t* vb = kb + rows * KV;
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(q_.data(), rows * Q, qb, s));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(k_.data(), rows * KV, kb, s));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(v_.data(), rows * KV, vb, s));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FlashAttentionBf16Device(
          qb, kb, vb, seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.window(layer), attn_.data(), s,
          spec.softmax_scale(), spec.attention_softcap, spec.chunk(layer)));
    } else if (p == cuda::GemmPrecision::kBf16)
      LLMC_CUDA_STR_RETURN_IF_ERROR(ctx_->blas()->CausalAttentionGemm(
          q_.data(), k_.data(), v_.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
          spec.window(layer), spec.softmax_scale(), spec.attention_softcap, scores_.data(), scores_.size(),
          attn_.data(), spec.chunk(layer)));
    else
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::CausalAttentionDevice(
          q_.data(), k_.data(), v_.data(), seqs, T, spec.num_heads, spec.num_kv_heads, spec.head_dim,
          spec.window(layer), attn_.data(), s, spec.softmax_scale(), spec.attention_softcap, spec.chunk(layer)));
    LLMC_RETURN_IF_ERROR(Mark("attention"));
    LLMC_ASSIGN_OR_RETURN(const uint16_t* ab, xb_or(attn_.data(), rows * Q));
    LLMC_RETURN_IF_ERROR(Linear(w->o_, p, attn_.data(), ab, rows, proj_.data(), hooks));
    LLMC_RETURN_IF_ERROR(Mark("o projection"));
    if (spec.sandwich_norms)
      LLMC_CUDA_STR_RETURN_IF_ERROR(
          cuda::RmsNormDevice(proj_.data(), rows, H, w->post_norm_.data(), eps, proj_.data(), s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::AddDevice(xc, proj_.data(), rows * H, s));
    // MLP (the MoE MLP reads the fp32 norm and converts what its GEMMs read itself).
    uint16_t* mb = nullptr;
    if (!w->moe_layer_) {
      LLMC_ASSIGN_OR_RETURN(mb, bf16_out(rows * H));
    }
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(
        xc, rows, H, spec.sandwich_norms ? w->pre_ff_norm_.data() : w->post_norm_.data(), eps,
        fp32_inputs || w->moe_layer_ ? normed_.data() : nullptr, s, mb));
    if (w->moe_layer_) {
      LLMC_RETURN_IF_ERROR(Mark("residual and norm"));
      LLMC_RETURN_IF_ERROR(RunMoe(w, rows, hooks));
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::AddDevice(xc, proj_.data(), rows * H, s));
      LLMC_RETURN_IF_ERROR(Mark("MoE MLP and residual"));
      continue;
    }
    LLMC_RETURN_IF_ERROR(Mark("residual and norm"));
    if (spec.fused_projections) {
      LLMC_RETURN_IF_ERROR(Linear(w->gate_, p, normed_.data(), mb, rows, fused_.data(), hooks));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, 2 * I, 0, I, gate_.data()));
      LLMC_RETURN_IF_ERROR(CopyColumns(fused_.data(), rows, 2 * I, I, I, up_.data()));
    } else {
      LLMC_RETURN_IF_ERROR(Linear(w->gate_, p, normed_.data(), mb, rows, gate_.data(), hooks));
      LLMC_RETURN_IF_ERROR(Linear(w->up_, p, normed_.data(), mb, rows, up_.data(), hooks));
    }
    LLMC_RETURN_IF_ERROR(Mark("gate/up projections"));
    LLMC_ASSIGN_OR_RETURN(uint16_t* gb, bf16_out(rows * I));
    float* act = fp32_inputs ? gate_.data() : nullptr;
    if (spec.activation == Activation::kGeluTanh) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::GeluTanhGluDevice(gate_.data(), up_.data(), rows * I, act, s, gb));
    } else {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::SwiGluDevice(gate_.data(), up_.data(), rows * I, act, s, gb));
    }
    LLMC_RETURN_IF_ERROR(Mark("MLP activation"));
    LLMC_RETURN_IF_ERROR(Linear(w->down_, p, gate_.data(), gb, rows, proj_.data(), hooks));
    LLMC_RETURN_IF_ERROR(Mark("down projection"));
    if (spec.sandwich_norms)
      LLMC_CUDA_STR_RETURN_IF_ERROR(
          cuda::RmsNormDevice(proj_.data(), rows, H, w->post_ff_norm_.data(), eps, proj_.data(), s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::AddDevice(xc, proj_.data(), rows * H, s));
    LLMC_RETURN_IF_ERROR(Mark("residual"));
  }
  LLMC_CUDA_RETURN_IF_ERROR(cudaEventRecord(w->released_, s));
  return absl::OkStatus();
}

absl::Status CudaBlockRunner::RunExpert(const CudaBlockWeights::Linear& gate, const CudaBlockWeights::Linear& up,
                                        const CudaBlockWeights::Linear& down, cuda::GemmPrecision p, const float* x,
                                        int64_t rows, float* y, CudaLinearHooks* hooks) {
  const int64_t H = spec_.hidden_size, I = gate.meta.out_features;
  LLMC_ASSIGN_OR_RETURN(const uint16_t* xb, ToBf16(p, x, rows * H));
  LLMC_RETURN_IF_ERROR(Linear(gate, p, x, xb, rows, gate_.data(), hooks));
  LLMC_RETURN_IF_ERROR(Linear(up, p, x, xb, rows, up_.data(), hooks));
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::SwiGluDevice(gate_.data(), up_.data(), rows * I, gate_.data(), ctx_->stream()));
  LLMC_ASSIGN_OR_RETURN(const uint16_t* gb, ToBf16(p, gate_.data(), rows * I));
  return Linear(down, p, gate_.data(), gb, rows, y, hooks);
}

absl::Status CudaBlockRunner::RunMoe(CudaBlockWeights* w, int64_t rows, CudaLinearHooks* hooks) {
  const MoeSpec& moe = spec_.moe;
  const int64_t H = spec_.hidden_size, E = moe.num_experts;
  const cuda::GemmPrecision p = w->precision_;
  cudaStream_t s = ctx_->stream();
  // Router logits to the host; the routing (softmax, top-k) is the CPU's, so both runtimes pick the same experts.
  LLMC_ASSIGN_OR_RETURN(const uint16_t* nb, ToBf16(p, normed_.data(), rows * H));
  LLMC_RETURN_IF_ERROR(Linear(w->router_, p, normed_.data(), nb, rows, logits_.data(), hooks));
  host_logits_.resize(rows * E);
  LLMC_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host_logits_.data(), logits_.data(), rows * E * sizeof(float), cudaMemcpyDeviceToHost, s));
  LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
  const MoeRouting routing = RouteTokens(moe, host_logits_.data(), rows);
  if (moe.style == MoeStyle::kLlama4) return RunLlama4Experts(w, routing, rows, hooks);
  // Every expert's token list and weights, one after the other, then the shared expert's (all tokens).
  LLMC_ASSIGN_OR_RETURN(const std::vector<int64_t> offset, UploadRouting(routing, rows, /*all_rows=*/true));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(proj_.data(), 0, rows * H * sizeof(float), s));
  const bool all = hooks != nullptr && hooks->SeeAllExperts();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = offset[e + 1] - offset[e];
    if (n == 0 && !all) continue;
    const int32_t* tok = rows_idx_.data() + offset[e];
    const float* x = normed_.data();
    if (!all) {
      LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::GatherRowsDevice(normed_.data(), tok, n, H, xg_.data(), s));
      x = xg_.data();
    }
    LLMC_RETURN_IF_ERROR(RunExpert(w->expert_gate_[e], w->expert_up_[e], w->expert_down_[e], p, x, all ? rows : n,
                                   ye_.data(), hooks));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::ScatterAddScaledRowsDevice(ye_.data(), all ? tok : nullptr, tok,
                                                                   scales_.data() + offset[e], n, H, proj_.data(), s));
  }
  if (moe.shared_intermediate > 0) {
    LLMC_RETURN_IF_ERROR(RunExpert(w->shared_gate_, w->shared_up_, w->shared_down_, p, normed_.data(), rows,
                                   ye_.data(), hooks));
    LLMC_ASSIGN_OR_RETURN(const uint16_t* nb2, ToBf16(p, normed_.data(), rows * H));
    LLMC_RETURN_IF_ERROR(Linear(w->shared_expert_gate_, p, normed_.data(), nb2, rows, logits_.data(), hooks));
    std::vector<float> g(rows);
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(g.data(), logits_.data(), rows * sizeof(float), cudaMemcpyDeviceToHost, s));
    LLMC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
    for (float& v : g) v = SharedExpertScale(v);
    float* shared_scale = scales_.data() + offset[E];
    LLMC_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(shared_scale, g.data(), rows * sizeof(float), cudaMemcpyHostToDevice, s));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::ScatterAddScaledRowsDevice(ye_.data(), nullptr, rows_idx_.data() + offset[E],
                                                                   shared_scale, rows, H, proj_.data(), s));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> CudaBlockRunner::UploadRouting(const MoeRouting& routing, int64_t rows,
                                                                    bool all_rows) {
  const int64_t E = spec_.moe.num_experts;
  std::vector<int32_t> idx;
  std::vector<float> scale;
  std::vector<int64_t> offset(E + 1, 0);
  idx.reserve(rows * (spec_.moe.top_k + 1));
  scale.reserve(rows * (spec_.moe.top_k + 1));
  for (int64_t e = 0; e < E; ++e) {
    offset[e] = static_cast<int64_t>(idx.size());
    idx.insert(idx.end(), routing.tokens[e].begin(), routing.tokens[e].end());
    scale.insert(scale.end(), routing.weights[e].begin(), routing.weights[e].end());
  }
  offset[E] = static_cast<int64_t>(idx.size());
  if (all_rows)
    for (int64_t t = 0; t < rows; ++t) idx.push_back(static_cast<int32_t>(t));
  cudaStream_t s = ctx_->stream();
  // Pageable host memory: each copy has left the host buffer when it returns.
  if (!idx.empty())
    LLMC_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(rows_idx_.data(), idx.data(), idx.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s));
  if (!scale.empty())
    LLMC_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(scales_.data(), scale.data(), scale.size() * sizeof(float), cudaMemcpyHostToDevice, s));
  return offset;
}

absl::Status CudaBlockRunner::RunLlama4Experts(CudaBlockWeights* w, const MoeRouting& routing, int64_t rows,
                                               CudaLinearHooks* hooks) {
  const int64_t H = spec_.hidden_size, E = spec_.moe.num_experts;
  const cuda::GemmPrecision p = w->precision_;
  cudaStream_t s = ctx_->stream();
  if (w->shared_gate_.meta.out_features == 0)
    return absl::InternalError("a Llama 4 MoE layer without its shared expert");
  LLMC_ASSIGN_OR_RETURN(const std::vector<int64_t> offset, UploadRouting(routing, rows, /*all_rows=*/false));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(proj_.data(), 0, rows * H * sizeof(float), s));
  const bool all = hooks != nullptr && hooks->SeeAllExperts();
  for (int64_t e = 0; e < E; ++e) {
    // All-experts calibration: every expert also runs on every token's unscaled input, for the hooks only.
    if (all)
      LLMC_RETURN_IF_ERROR(RunExpert(w->expert_gate_[e], w->expert_up_[e], w->expert_down_[e], p, normed_.data(),
                                     rows, ye_.data(), hooks));
    const int64_t n = offset[e + 1] - offset[e];
    if (n == 0) continue;
    const int32_t* tok = rows_idx_.data() + offset[e];
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::GatherRowsDevice(normed_.data(), tok, n, H, xg_.data(), s, scales_.data() + offset[e]));
    LLMC_RETURN_IF_ERROR(RunExpert(w->expert_gate_[e], w->expert_up_[e], w->expert_down_[e], p, xg_.data(), n,
                                   ye_.data(), all ? nullptr : hooks));
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::ScatterAddScaledRowsDevice(ye_.data(), nullptr, tok, ones_.data(), n, H, proj_.data(), s));
  }
  LLMC_RETURN_IF_ERROR(RunExpert(w->shared_gate_, w->shared_up_, w->shared_down_, p, normed_.data(), rows, ye_.data(),
                                 hooks));
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::AddDevice(proj_.data(), ye_.data(), rows * H, s));
  return absl::OkStatus();
}

}  // namespace llmc
