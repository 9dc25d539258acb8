// A CausalLm run on the GPU block by block: the host loads (and, for compressed-tensors checkpoints, dequantizes)
// each block with CausalLm::LoadBlock, the device runs it on hidden states that stay on the device from the
// embedding to the logits.
//
//   LLMC_ASSIGN_OR_RETURN(auto lm, CausalLm::Open(path));
//   LLMC_ASSIGN_OR_RETURN(auto gpu, CudaCausalLm::Create(lm.get()));
//   LLMC_ASSIGN_OR_RETURN(auto logits, gpu->Forward(ids, num_seqs, seq_len));        // like CausalLm::Forward
//   LLMC_ASSIGN_OR_RETURN(auto ppl, ComputePerplexityCuda(*lm, ids, ppl_options));   // like ComputePerplexity
//
// GPU memory: one block of weights (two with prefetch: block i+1 is uploaded on a second stream while block i
// runs), the hidden states of the sequences in flight, the chunk scratch of CudaBlockRunner, and lm_head with one
// chunk of logits. Not thread-safe; `lm` must outlive the CudaCausalLm and is used from the calling thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend/cuda/blas.h"
#include "engine/model/causal_lm.h"
#include "engine/model/cuda_block_runner.h"
#include "engine/model/cuda_context.h"
#include "engine/model/perplexity.h"

namespace llmc {

struct CudaModelOptions {
  int device = 0;
  cuda::GemmPrecision precision = cuda::GemmPrecision::kFp32;
  int64_t max_chunk_tokens = 8192;  // CudaBlockRunnerOptions::max_chunk_tokens
  // Upload block i+1 on the upload stream while block i computes (two blocks of device weights instead of one).
  bool prefetch = true;
};

class CudaCausalLm {
 public:
  // FAILED_PRECONDITION when there is no CUDA device (see CudaContext::Create).
  static absl::StatusOr<std::unique_ptr<CudaCausalLm>> Create(const CausalLm* lm, const CudaModelOptions& options = {});

  const CausalLm& lm() const { return *lm_; }
  CudaContext* context() { return ctx_.get(); }
  const CudaModelOptions& options() const { return options_; }

  // Token embeddings (gathered on the host as CausalLm::Embed) on the device.
  absl::StatusOr<DeviceHiddenStates> Embed(absl::Span<const int32_t> ids, int64_t num_seqs, int64_t seq_len);

  // Runs every decoder block over x in place. Each block is loaded with lm.LoadBlock(layer, weight_hooks)
  // (OnWeightLoaded sees and may change the host weights before they are uploaded); `input_hooks` (may be null)
  // sees every Linear input on the device. `after_block(layer, x)` (optional) is called after each block with the
  // compute stream synchronized. Returns with the work possibly still queued (Synchronize or a download waits).
  absl::Status RunBlocks(DeviceHiddenStates* x, LinearHooks* weight_hooks = nullptr,
                         CudaLinearHooks* input_hooks = nullptr,
                         const std::function<absl::Status(int layer, const DeviceHiddenStates& x)>& after_block =
                             nullptr);

  // The final RMSNorm, in place.
  absl::Status ApplyFinalNorm(DeviceHiddenStates* x);

  // Uploads lm_head (CausalLm::LoadLmHead, with `hooks` OnWeightLoaded); kept until the next call.
  absl::Status LoadLmHead(LinearHooks* hooks = nullptr);
  // logits [rows, vocab] (device) = x [rows, hidden] (device) lm_head^T, after input_hooks (may be null). Needs
  // LoadLmHead first.
  absl::Status Logits(const float* x, int64_t rows, float* logits, CudaLinearHooks* input_hooks = nullptr);

  // The whole forward pass of a small batch with the results on the host, as CausalLm::Forward: logits
  // [num_seqs * seq_len, vocab]; on_hidden(i, x) sees the host copy of the hidden states after the embedding
  // (i = 0) and after each block (the last one after the final norm). `hooks`: OnWeightLoaded on the host,
  // OnInput through a HostLinearHooksAdapter.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> ids, int64_t num_seqs, int64_t seq_len,
                                             const std::function<void(int, const HiddenStates&)>& on_hidden = nullptr,
                                             LinearHooks* hooks = nullptr);

 private:
  CudaCausalLm() = default;

  const CausalLm* lm_ = nullptr;
  CudaModelOptions options_;
  std::unique_ptr<CudaContext> ctx_;
  std::unique_ptr<CudaBlockRunner> runner_;
  std::unique_ptr<CudaBlockWeights> weights_[2];
  DeviceArray<float> final_norm_;
  LinearWeight head_meta_;
  DeviceArray<float> head_w32_;
  DeviceArray<uint16_t> head_w16_;
  DeviceArray<uint16_t> head_xb_;
};

// ComputePerplexity (perplexity.h) on the GPU: the same protocol, windows and passes; the model runs on the
// device with `cuda_options`, and the token NLLs are computed on the device (fp32 logits, fp64 normalizer) and
// summed on the host in the CPU's order. options.hooks: OnWeightLoaded on the host, OnInput through a
// HostLinearHooksAdapter. lm_head is loaded once for all passes.
absl::StatusOr<PerplexityResult> ComputePerplexityCuda(const CausalLm& lm, absl::Span<const int32_t> ids,
                                                       const PerplexityOptions& options,
                                                       const CudaModelOptions& cuda_options = {});

}  // namespace llmc
