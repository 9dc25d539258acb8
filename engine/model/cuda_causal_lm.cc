#include "engine/model/cuda_causal_lm.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend/cuda/model_kernels.h"
#include "engine/model/cuda_status.h"
#include "engine/tensor/dtype.h"

namespace llmc {

absl::StatusOr<std::unique_ptr<CudaCausalLm>> CudaCausalLm::Create(const CausalLm* lm,
                                                                   const CudaModelOptions& options) {
  std::unique_ptr<CudaCausalLm> m(new CudaCausalLm());
  m->lm_ = lm;
  m->options_ = options;
  LLMC_ASSIGN_OR_RETURN(m->ctx_, CudaContext::Create(options.device));
  const ModelSpec& spec = lm->spec();
  CudaBlockRunnerOptions ro;
  ro.max_chunk_tokens = options.max_chunk_tokens;
  LLMC_ASSIGN_OR_RETURN(m->runner_, CudaBlockRunner::Create(spec, m->ctx_.get(), ro));
  const int buffers = options.prefetch && spec.num_layers > 1 ? 2 : 1;
  for (int i = 0; i < buffers; ++i) {
    LLMC_ASSIGN_OR_RETURN(m->weights_[i], CudaBlockWeights::Create(spec, options.precision, m->ctx_.get()));
  }
  // The final norm's effective scale, as the CPU runtime holds it.
  const std::vector<float>& norm = lm->final_norm();
  LLMC_ASSIGN_OR_RETURN(m->final_norm_, DeviceArray<float>::Create(spec.hidden_size, "model.norm"));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpy(m->final_norm_.data(), norm.data(), norm.size() * sizeof(float),
                                       cudaMemcpyHostToDevice));
  return m;
}

absl::StatusOr<DeviceHiddenStates> CudaCausalLm::Embed(absl::Span<const int32_t> ids, int64_t num_seqs,
                                                       int64_t seq_len) {
  LLMC_ASSIGN_OR_RETURN(HiddenStates x, lm_->Embed(ids, num_seqs, seq_len));
  return UploadHiddenStates(x, ctx_.get());
}

absl::Status CudaCausalLm::RunBlocks(
    DeviceHiddenStates* x, LinearHooks* weight_hooks, CudaLinearHooks* input_hooks,
    const std::function<absl::Status(int layer, const DeviceHiddenStates& x)>& after_block) {
  const int layers = static_cast<int>(lm_->spec().num_layers);
  if (layers == 0) return absl::OkStatus();
  const int buffers = weights_[1] != nullptr ? 2 : 1;
  {
    LLMC_ASSIGN_OR_RETURN(auto block, lm_->LoadBlock(0, weight_hooks));
    LLMC_RETURN_IF_ERROR(weights_[0]->Upload(*block));
  }
  for (int layer = 0; layer < layers; ++layer) {
    LLMC_RETURN_IF_ERROR(runner_->Run(weights_[layer % buffers].get(), x, input_hooks));
    if (layer + 1 < layers) {
      // The host loads (converts, dequantizes) the next block while the device runs this one; with two buffers
      // the upload overlaps too, with one it waits for this block to finish.
      LLMC_ASSIGN_OR_RETURN(auto block, lm_->LoadBlock(layer + 1, weight_hooks));
      LLMC_RETURN_IF_ERROR(weights_[(layer + 1) % buffers]->Upload(*block));
    }
    if (after_block) {
      LLMC_RETURN_IF_ERROR(ctx_->Synchronize());
      LLMC_RETURN_IF_ERROR(after_block(layer, *x));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaCausalLm::ApplyFinalNorm(DeviceHiddenStates* x) {
  const ModelSpec& spec = lm_->spec();
  if (x->hidden != spec.hidden_size)
    return absl::InvalidArgumentError(absl::StrCat("ApplyFinalNorm: hidden states have width ", x->hidden,
                                                   ", the model ", spec.hidden_size));
  LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::RmsNormDevice(x->data.data(), x->tokens(), x->hidden, final_norm_.data(),
                                                    static_cast<float>(spec.rms_norm_eps), x->data.data(),
                                                    ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaCausalLm::LoadLmHead(LinearHooks* hooks) {
  LLMC_ASSIGN_OR_RETURN(LinearWeight head, lm_->LoadLmHead(hooks));
  if (head.input_quant != nullptr || head.output_quant != nullptr)
    return absl::UnimplementedError(absl::StrCat(
        lm_->dir().path(), ": the checkpoint quantizes lm_head's activations; the CUDA runtime evaluates them for "
        "decoder blocks only; use --device cpu (or --activations weights-only)"));
  LLMC_RETURN_IF_ERROR(ctx_->Synchronize());  // a previous head may still be in use
  head_meta_ = LinearWeight{};
  head_meta_.name = head.name;
  head_meta_.layer = head.layer;
  head_meta_.out_features = head.out_features;
  head_meta_.in_features = head.in_features;
  const int64_t n = head.out_features * head.in_features;
  if (options_.precision == cuda::GemmPrecision::kBf16) {
    std::vector<uint16_t> bits(static_cast<size_t>(n));
    lm_->context()->ParallelFor(n, 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) bits[i] = FloatToBF16(head.weight[i]);
    });
    head_w32_.Reset();
    LLMC_RETURN_IF_ERROR(head_w16_.Reserve(n, "lm_head weights"));
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpy(head_w16_.data(), bits.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
  } else {
    head_w16_.Reset();
    LLMC_RETURN_IF_ERROR(head_w32_.Reserve(n, "lm_head weights"));
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpy(head_w32_.data(), head.weight.data(), n * sizeof(float),
                                         cudaMemcpyHostToDevice));
  }
  return absl::OkStatus();
}

absl::Status CudaCausalLm::Logits(const float* x, int64_t rows, float* logits, CudaLinearHooks* input_hooks) {
  if (head_w32_.size() == 0 && head_w16_.size() == 0)
    return absl::FailedPreconditionError("CudaCausalLm::Logits: call LoadLmHead first");
  if (input_hooks != nullptr) LLMC_RETURN_IF_ERROR(input_hooks->OnDeviceInput(head_meta_, x, nullptr, rows, ctx_->stream()));
  const int64_t H = head_meta_.in_features;
  const uint16_t* xb = nullptr;
  const void* w = head_w32_.data();
  if (options_.precision == cuda::GemmPrecision::kBf16) {
    LLMC_RETURN_IF_ERROR(head_xb_.Reserve(rows * H, "lm_head bf16 input"));
    LLMC_CUDA_STR_RETURN_IF_ERROR(cuda::FloatToBf16Device(x, rows * H, head_xb_.data(), ctx_->stream()));
    xb = head_xb_.data();
    w = head_w16_.data();
  }
  LLMC_CUDA_STR_RETURN_IF_ERROR(
      ctx_->blas()->Linear(options_.precision, x, xb, rows, H, w, nullptr, head_meta_.out_features, logits));
  if (lm_->spec().final_softcap > 0)
    LLMC_CUDA_STR_RETURN_IF_ERROR(
        cuda::SoftcapDevice(logits, rows * head_meta_.out_features, lm_->spec().final_softcap, ctx_->stream()));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CudaCausalLm::Forward(
    absl::Span<const int32_t> ids, int64_t num_seqs, int64_t seq_len,
    const std::function<void(int, const HiddenStates&)>& on_hidden, LinearHooks* hooks) {
  LLMC_ASSIGN_OR_RETURN(DeviceHiddenStates x, Embed(ids, num_seqs, seq_len));
  HiddenStates host;
  if (on_hidden) {
    LLMC_RETURN_IF_ERROR(DownloadHiddenStates(x, ctx_.get(), &host));
    on_hidden(0, host);
  }
  HostLinearHooksAdapter adapter(hooks);
  CudaLinearHooks* input_hooks = hooks != nullptr ? &adapter : nullptr;
  const int layers = static_cast<int>(lm_->spec().num_layers);
  std::function<absl::Status(int, const DeviceHiddenStates&)> after_block;
  if (on_hidden)
    after_block = [&](int layer, const DeviceHiddenStates& d) -> absl::Status {
      if (layer + 1 == layers) return absl::OkStatus();  // shown after the final norm
      LLMC_RETURN_IF_ERROR(DownloadHiddenStates(d, ctx_.get(), &host));
      on_hidden(layer + 1, host);
      return absl::OkStatus();
    };
  LLMC_RETURN_IF_ERROR(RunBlocks(&x, hooks, input_hooks, after_block));
  LLMC_RETURN_IF_ERROR(ApplyFinalNorm(&x));
  if (on_hidden && layers > 0) {
    LLMC_RETURN_IF_ERROR(DownloadHiddenStates(x, ctx_.get(), &host));
    on_hidden(layers, host);
  }
  LLMC_RETURN_IF_ERROR(LoadLmHead(hooks));
  const int64_t V = lm_->spec().vocab_size;
  LLMC_ASSIGN_OR_RETURN(auto logits, DeviceArray<float>::Create(std::max<int64_t>(1, x.tokens() * V), "logits"));
  LLMC_RETURN_IF_ERROR(Logits(x.data.data(), x.tokens(), logits.data(), input_hooks));
  std::vector<float> out(static_cast<size_t>(x.tokens() * V));
  LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), logits.data(), out.size() * sizeof(float),
                                            cudaMemcpyDeviceToHost, ctx_->stream()));
  LLMC_RETURN_IF_ERROR(ctx_->Synchronize());
  return out;
}

absl::StatusOr<PerplexityResult> ComputePerplexityCuda(const CausalLm& lm, absl::Span<const int32_t> ids,
                                                       const PerplexityOptions& o,
                                                       const CudaModelOptions& cuda_options) {
  LLMC_ASSIGN_OR_RETURN(auto gpu, CudaCausalLm::Create(&lm, cuda_options));
  const ModelSpec& spec = lm.spec();
  const int64_t T = o.seq_len, V = spec.vocab_size;
  // Logits of the predicting positions in chunks of at most ~256 MB, as on the CPU.
  const int64_t chunk_rows = std::clamp<int64_t>((int64_t{64} << 20) / V, 1, std::max<int64_t>(1, T - 1));
  HostLinearHooksAdapter adapter(o.hooks);
  CudaLinearHooks* input_hooks = o.hooks != nullptr ? &adapter : nullptr;
  CudaContext* ctx = gpu->context();
  DeviceArray<float> logits;
  DeviceArray<int32_t> targets;
  DeviceArray<double> nll;
  std::vector<int32_t> host_targets;
  std::vector<double> host_nll;
  bool head_loaded = false;
  auto run_pass = [&](int64_t pass, int64_t passes, absl::Span<const int32_t> pass_ids, int64_t nw,
                      double* nll_sums) -> absl::Status {
    const int64_t predicted = nw * (T - 1);
    LLMC_RETURN_IF_ERROR(logits.Reserve(chunk_rows * V, "logits"));
    LLMC_RETURN_IF_ERROR(targets.Reserve(predicted, "target ids"));
    LLMC_RETURN_IF_ERROR(nll.Reserve(predicted, "token NLLs"));
    host_targets.resize(predicted);
    for (int64_t w = 0; w < nw; ++w)
      for (int64_t t = 0; t + 1 < T; ++t) host_targets[w * (T - 1) + t] = pass_ids[w * T + t + 1];
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(targets.data(), host_targets.data(), predicted * sizeof(int32_t),
                                              cudaMemcpyHostToDevice, ctx->stream()));
    LLMC_ASSIGN_OR_RETURN(DeviceHiddenStates x, gpu->Embed(pass_ids, nw, T));
    std::function<absl::Status(int, const DeviceHiddenStates&)> progress;
    if (o.on_progress)
      progress = [&](int layer, const DeviceHiddenStates&) {
        o.on_progress(pass, passes, layer, spec.num_layers);
        return absl::OkStatus();
      };
    LLMC_RETURN_IF_ERROR(gpu->RunBlocks(&x, o.hooks, input_hooks, progress));
    LLMC_RETURN_IF_ERROR(gpu->ApplyFinalNorm(&x));
    if (!head_loaded) {
      LLMC_RETURN_IF_ERROR(gpu->LoadLmHead(o.hooks));
      head_loaded = true;
    }
    for (int64_t w = 0; w < nw; ++w) {
      for (int64_t r0 = 0; r0 < T - 1; r0 += chunk_rows) {
        const int64_t n = std::min(chunk_rows, T - 1 - r0);
        LLMC_RETURN_IF_ERROR(gpu->Logits(x.row(w * T + r0), n, logits.data(), input_hooks));
        const int64_t off = w * (T - 1) + r0;
        LLMC_CUDA_STR_RETURN_IF_ERROR(
            cuda::TokenNllDevice(logits.data(), n, V, targets.data() + off, nll.data() + off, ctx->stream()));
      }
    }
    host_nll.resize(predicted);
    LLMC_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_nll.data(), nll.data(), predicted * sizeof(double),
                                              cudaMemcpyDeviceToHost, ctx->stream()));
    LLMC_RETURN_IF_ERROR(ctx->Synchronize());
    for (int64_t w = 0; w < nw; ++w) {
      double sum = 0;
      for (int64_t t = 0; t + 1 < T; ++t) sum += host_nll[w * (T - 1) + t];
      nll_sums[w] = sum;
    }
    return absl::OkStatus();
  };
  return ComputePerplexityWith(spec, ids, o, run_pass);
}

}  // namespace llmc
