// One decoder block on the GPU, with the semantics of RunDecoderBlock (decoder_block.h):
//   x += o_proj(attention(rope(q_norm?(q_proj(n))), rope(k_norm?(k_proj(n))), v_proj(n)))   n = input_norm(x)
//   x += down_proj(act(gate_proj(m)) * up_proj(m))                                           m = post_norm(x)
// (with Gemma's sandwich norms, per-layer windows and ropes, softmax scale and softcap as RunDecoderBlock)
//  on the device between blocks.
// or the mixture-of-experts MLP of moe.h (router on the device, top-k on the host, each expert's tokens gathered,
// run and scattered back with their weights), on hidden states that stay on the device between blocks.
//
//   LLMC_ASSIGN_OR_RETURN(auto ctx, CudaContext::Create());
//   LLMC_ASSIGN_OR_RETURN(auto w, CudaBlockWeights::Create(spec, cuda::GemmPrecision::kFp32, ctx.get()));
//   LLMC_ASSIGN_OR_RETURN(auto runner, CudaBlockRunner::Create(spec, ctx.get()));
//   LLMC_RETURN_IF_ERROR(w->Upload(*lm->LoadBlock(i)));      // host block may be freed once this returns
//   LLMC_RETURN_IF_ERROR(runner->Run(w.get(), &x));            // asynchronous on ctx->stream()
//
// Numerics: GEMMs as `GemmPrecision` says (fp32 by default: ~1e-6 relative to the CPU), everything else fp32 with
// the CPU's formulas (RMSNorm sums in double, RoPE bit-identical, attention with an online softmax in fp32).
// Not thread-safe: one thread drives a context and everything made with it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend/cuda/activation_quant_kernels.h"
#include "engine/backend/cuda/blas.h"
#include "engine/model/architecture.h"
#include "engine/model/cuda_context.h"
#include "engine/model/decoder_block.h"
#include "engine/model/linear_hooks.h"

namespace llmc {

// The CUDA kernel's parameters for `q` (engine/backend/cuda/activation_quant_kernels.h). UNIMPLEMENTED, naming q,
// when it holds more static scales than the kernel takes.
absl::StatusOr<cuda::ActivationQuantParams> ActivationQuantDeviceParams(const ActivationQuantizer& q);

// Sees each Linear's input on the device, for calibration statistics (e.g. Blas::AccumulateXtX into a device
// Hessian). Called from the thread that runs the block, in the order RunDecoderBlock calls LinearHooks::OnInput
// (q/k/v, and gate/up, each get their own call with the same input).
class CudaLinearHooks {
 public:
  virtual ~CudaLinearHooks() = default;
  // `input` is a device pointer to [tokens, w.in_features] fp32, row-major, holding the input once the work
  // queued on `stream` so far has run. Work the hook queues on `stream` sees it; the GEMM that consumes it is
  // queued after the call returns, and the buffer is overwritten later, so the hook must not read it from other
  // streams or after returning (unless it synchronized `stream`). `w` carries name, layer and shape; its weight
  // and bias vectors are EMPTY (the weights are on the device; OnWeightLoaded saw them on the host). A non-OK
  // status aborts the block and is returned unchanged.
  // `input_bf16`, when not null, is the same input rounded to bf16 (the copy a bf16-mode GEMM reads), valid as long
  // as `input`.
  virtual absl::Status OnDeviceInput(const LinearWeight& w, const float* input, const uint16_t* input_bf16,
                                     int64_t tokens, cudaStream_t stream) = 0;
  // As LinearHooks::SeeAllExperts: every expert of an MoE block runs on every token.
  virtual bool SeeAllExperts() const { return false; }
  // Whether OnDeviceInput reads `input` (the fp32 values). A hook that reads only `input_bf16` returns false, and
  // a bf16-mode block may then skip writing the fp32 copies of the inputs nothing else reads: `input` points at a
  // buffer of the right size whose contents are unspecified, wherever `input_bf16` is given.
  virtual bool NeedsFp32Input() const { return true; }
};

// Runs CPU LinearHooks on the device path: copies each input to host memory (synchronizing the stream) and calls
// hooks->OnInput(w, input, tokens), with `w` as in CudaLinearHooks (empty weight and bias). Costs one device-to-host
// copy of every Linear input; meant for hooks that have no device implementation.
class HostLinearHooksAdapter final : public CudaLinearHooks {
 public:
  explicit HostLinearHooksAdapter(LinearHooks* hooks) : hooks_(hooks) {}
  absl::Status OnDeviceInput(const LinearWeight& w, const float* input, const uint16_t* input_bf16, int64_t tokens,
                             cudaStream_t stream) override;
  bool SeeAllExperts() const override { return hooks_ != nullptr && hooks_->SeeAllExperts(); }

 private:
  LinearHooks* hooks_;
  std::vector<float> host_;
};

// One block's weights on the device, allocated once for a model's block shape and refilled per layer (so a
// prefetching caller can keep two and alternate). Linear weights are fp32, or bf16 for GemmPrecision::kBf16
// (converted on the device, round to nearest even); norms and biases fp32.
class CudaBlockWeights {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBlockWeights>> Create(const ModelSpec& spec,
                                                                   cuda::GemmPrecision precision, CudaContext* ctx);
  ~CudaBlockWeights();

  // Copies `block` (shaped for the spec given to Create) into these device buffers on the context's upload
  // stream, after the last Run that used them has finished on the compute stream. Returns once the host data has
  // been copied out (the block may then be freed or changed); the transfer completes asynchronously, and Run
  // waits for it. INVALID_ARGUMENT when a tensor's size does not match the spec.
  // The Linear weights go up through a few pinned pieces of host memory, filled on several threads while earlier
  // pieces are on the bus; in bf16 mode they are rounded to bf16 on the host as they are filled (the device
  // conversion's bits: round to nearest even), so half the bytes cross. Where the host cannot pin memory they are
  // copied from pageable memory (and converted on the device).
  absl::Status Upload(const DecoderBlock& block);

  int layer() const { return layer_; }
  cuda::GemmPrecision precision() const { return precision_; }
  uint64_t device_bytes() const;

 private:
  friend class CudaBlockRunner;
  struct Linear {
    LinearWeight meta;  // name, layer, shape; empty weight/bias
    DeviceArray<float> w32;
    DeviceArray<uint16_t> w16;
    DeviceArray<float> bias;
    const void* weight() const { return w16.size() > 0 ? static_cast<const void*>(w16.data()) : w32.data(); }
    const float* bias_or_null() const { return bias.size() > 0 ? bias.data() : nullptr; }
  };
  CudaBlockWeights() = default;
  absl::Status UploadLinear(const LinearWeight& src, Linear* dst);
  // `src` (one Linear's fp32 weights) into `dev` (fp32, or bf16 in bf16 mode) on the upload stream.
  absl::Status CopyWeights(const std::vector<float>& src, Linear* dst);

  absl::Status CreateLinear(Linear* l, const std::string& name, int64_t out, int64_t in, bool bias,
                            int64_t* largest);

  ModelSpec spec_;
  cuda::GemmPrecision precision_ = cuda::GemmPrecision::kFp32;
  CudaContext* ctx_ = nullptr;
  int layer_ = -1;
  DeviceArray<float> input_norm_, post_norm_, q_norm_, k_norm_, pre_ff_norm_, post_ff_norm_;
  Linear q_, k_, v_, o_, gate_, up_, down_;  // dense MLP: allocated when some layer is dense
  // Mixture-of-experts MLP (allocated when some layer is sparse); moe_layer_: the uploaded block is sparse.
  Linear router_, shared_gate_, shared_up_, shared_down_, shared_expert_gate_;
  std::vector<Linear> expert_gate_, expert_up_, expert_down_;
  bool moe_layer_ = false;
  // The block's kv-cache fake quantization (null: none), as DecoderBlock's.
  std::shared_ptr<const ActivationQuantizer> k_cache_quant_, v_cache_quant_;
  int64_t largest_ = 0;         // the largest Linear's weight count
  DeviceArray<float> staging_;  // pageable fallback, bf16: one Linear's fp32 weights before conversion
  // Pinned pieces the weights go up through (CopyWeights), used in turn; each one's event is recorded after the copy
  // that reads it. Empty with pageable_ once pinning failed.
  struct Stage {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::vector<Stage> stages_;
  size_t next_stage_ = 0;
  bool pageable_ = false;
  cudaEvent_t ready_ = nullptr;     // recorded on the upload stream after Upload's copies
  cudaEvent_t released_ = nullptr;  // recorded on the compute stream after the last Run with these weights
};

struct CudaBlockRunnerOptions {
  // Tokens per chunk of whole sequences (at least one sequence), as RunDecoderBlock's max_chunk_tokens: bounds the
  // scratch to chunk_tokens * (2 hidden + 2 q_size + 2 kv_size + 2 intermediate) floats (+ a bf16 copy of the
  // widest input in bf16 mode). Results do not depend on it beyond float rounding.
  int64_t max_chunk_tokens = 8192;
  // Record a CUDA event after each stage of Run (norms, projections, rope, attention, MLP activation, residuals)
  // for TakeStageMilliseconds. Off by default: the events cost a little and nothing reads them.
  bool profile = false;
};

// Runs blocks on device hidden states. Holds the scratch buffers and the RoPE table (grown as needed).
class CudaBlockRunner {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBlockRunner>> Create(const ModelSpec& spec, CudaContext* ctx,
                                                                 const CudaBlockRunnerOptions& options = {});

  // Runs `w` on every sequence of `x` in place, fake-quantizing Linear inputs/outputs and k/v where the uploaded
  // block says (as RunDecoderBlock; kernels in engine/backend/cuda/activation_quant_kernels.h). Queues the work on the context's compute stream (after w's upload)
  // and returns without synchronizing unless a hook does; errors of queued kernels surface at the next
  // synchronization. `hooks` may be null. Fails when x's width is not the model's, a hook fails or a launch fails.
  absl::Status Run(CudaBlockWeights* w, DeviceHiddenStates* x, CudaLinearHooks* hooks = nullptr);

  // Device scratch bytes currently held.
  uint64_t scratch_bytes() const;

  // With options.profile: synchronizes the stream and returns the GPU milliseconds spent in each stage of the Runs
  // since the last call (stage name and total, in the order the stages first ran), then starts afresh. Each stage
  // includes the bf16 conversion of its input and the hooks called on it. Empty when profiling is off.
  absl::StatusOr<std::vector<std::pair<std::string, double>>> TakeStageMilliseconds();

  ~CudaBlockRunner();
  CudaBlockRunner(const CudaBlockRunner&) = delete;
  CudaBlockRunner& operator=(const CudaBlockRunner&) = delete;

 private:
  CudaBlockRunner() = default;
  // options_.profile: records the end of `stage` on the compute stream (the start is the previous mark).
  absl::Status Mark(const char* stage);
  absl::Status Reserve(int64_t rows, int64_t seq_len, cuda::GemmPrecision precision);
  absl::Status Linear(const CudaBlockWeights::Linear& l, cuda::GemmPrecision precision, const float* x,
                      const uint16_t* xb, int64_t rows, float* y, CudaLinearHooks* hooks);
  // Fake-quantizes x [rows, q.cols()] into y (may alias x) on the compute stream.
  absl::Status Quantize(const ActivationQuantizer& q, const float* x, float* y, int64_t rows);
  // dst [rows, width] = columns [col0, col0 + width) of src [rows, src_width] (splitting a fused projection), queued
  // on the compute stream.
  absl::Status CopyColumns(const float* src, int64_t rows, int64_t src_width, int64_t col0, int64_t width, float* dst);
  // bf16 copy of x [rows, cols] in xb_ (bf16 mode), else null.
  absl::StatusOr<const uint16_t*> ToBf16(cuda::GemmPrecision p, const float* x, int64_t n);
  // The MoE MLP of normed_ [rows, H] into proj_ (see moe.h; hooks as RunMoeMlp calls them).
  absl::Status RunMoe(CudaBlockWeights* w, int64_t rows, CudaLinearHooks* hooks);
  // Llama 4's sparse layers: each routed token's expert input scaled by its sigmoid router weight, the expert
  // outputs added unscaled, then the ungated shared expert (moe.cc RunLlama4Experts).
  absl::Status RunLlama4Experts(CudaBlockWeights* w, const MoeRouting& routing, int64_t rows, CudaLinearHooks* hooks);
  // Every expert's routed tokens and weights one after the other into rows_idx_ / scales_ (expert e's at [offset[e],
  // offset[e + 1]) of the returned offsets); with all_rows the indices 0..rows-1 follow (the shared expert's).
  absl::StatusOr<std::vector<int64_t>> UploadRouting(const MoeRouting& routing, int64_t rows, bool all_rows);
  // Llama 4: the ones used as the L2 norm's weight and as unit routing scales (at least n), and the query
  // temperatures of a no-rope layer's positions 0..T-1.
  absl::Status ReserveLlama4(int64_t n, int64_t T);
  // y [rows, H] = down(silu(gate(x)) * up(x)) for x [rows, H].
  absl::Status RunExpert(const CudaBlockWeights::Linear& gate, const CudaBlockWeights::Linear& up,
                         const CudaBlockWeights::Linear& down, cuda::GemmPrecision p, const float* x, int64_t rows,
                         float* y, CudaLinearHooks* hooks);

  ModelSpec spec_;
  CudaContext* ctx_ = nullptr;
  CudaBlockRunnerOptions options_;
  DeviceArray<float> normed_, q_, k_, v_, attn_, gate_, up_, proj_, fused_;
  // MoE scratch: router logits [rows, E], gathered inputs and expert outputs [rows, H], the routed token indices and
  // weights of every expert (and the shared expert's) [rows * (top_k + 1)].
  DeviceArray<float> logits_, xg_, ye_, scales_;
  DeviceArray<int32_t> rows_idx_;
  std::vector<float> host_logits_;
  DeviceArray<uint16_t> xb_;
  // bf16 mode, head widths the flash kernel does not take: the scores of one chunk of query rows of the
  // tensor-core attention (Blas::CausalAttentionGemm).
  DeviceArray<float> scores_;
  DeviceArray<float> qin_;      // a quantized Linear input (q/k/v and gate/up share theirs)
  DeviceArray<uint16_t> qinb_;  // its bf16 copy (bf16 mode)
  DeviceArray<float> rope_cos_, rope_sin_;              // spec.rope
  DeviceArray<float> rope_local_cos_, rope_local_sin_;  // spec.rope_local (when spec.local_rope)
  int64_t rope_positions_ = 0;
  bool rope_long_ = false;  // the tables hold longrope's long factors
  DeviceArray<float> ones_, temperatures_;  // Llama 4 (ReserveLlama4)
  int64_t ones_filled_ = 0, temperature_positions_ = 0;
  // options_.profile: events recorded so far (stage each one ends; the first of a Run ends nothing) and the pool.
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
  size_t marks_used_ = 0;
};

}  // namespace llmc
