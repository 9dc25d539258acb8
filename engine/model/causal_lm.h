// A decoder-only causal language model run on the CPU block by block:
//
//   auto lm = CausalLm::Open(path);                  // reads config.json and safetensors headers only
//   auto x = lm->Embed(ids, num_seqs, seq_len);      // [num_seqs * seq_len, hidden]
//   for (int i = 0; i < lm->spec().num_layers; ++i) {
//     auto block = lm->LoadBlock(i, hooks);          // this block's weights as fp32 (dequantized if
//     compressed) lm->RunBlock(*block, &x, hooks);               // every sequence through it; then the block
//     is freed
//   }
//   lm->ApplyFinalNorm(&x);  auto head = lm->LoadLmHead();  lm->Logits(head, x.row(r), rows, out);
//
// so memory is one block's fp32 weights plus the activations, whatever the number of layers. Weights are
// stored as in the checkpoint (BF16/F16/F32 or a compressed-tensors format) and converted to fp32 when a
// block is loaded; all math is fp32 (GEMMs through OpenBLAS), log-softmax in fp64.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/io/model_dir.h"
#include "engine/model/architecture.h"
#include "engine/model/cpu_context.h"
#include "engine/model/decoder_block.h"
#include "engine/model/linear_hooks.h"
#include "engine/model/weight_loader.h"

namespace llmc {

struct CausalLmOptions {
  int threads = 0;  // CPU threads (0: one per hardware thread)
  int64_t max_chunk_tokens =
      4096;  // tokens per block-forward chunk (bounds scratch memory; no effect on results)
  // Fake-quantize activations (Linear inputs/outputs, kv cache) as the checkpoint's quantization_config says
  // (docs/formats.md, "Activations at evaluation"). Off: dequantized weights with fp32 activations ("weights
  // only"). Opening a checkpoint whose activation scheme llmc cannot evaluate fails while this is on.
  bool quantize_activations = true;
};

// Not thread-safe: one call at a time (the calls share one thread pool).
class CausalLm {
 public:
  // Opens the Hugging Face model directory `path`. Fails (naming the file) when it is not a directory with
  // config.json and safetensors weights, the architecture is not supported (the error lists the supported
  // ones), or quantization_config cannot be read.
  static absl::StatusOr<std::unique_ptr<CausalLm>> Open(const std::string& path,
                                                        const CausalLmOptions& options = {});

  const ModelSpec& spec() const { return spec_; }
  const ModelDir& dir() const { return *dir_; }
  const WeightLoader& loader() const { return *loader_; }
  CpuContext* context() const { return ctx_.get(); }

  // Token embeddings of num_seqs sequences of seq_len ids each (ids.size() == num_seqs * seq_len). Fails
  // naming the position of an id outside the vocabulary.
  absl::StatusOr<HiddenStates> Embed(absl::Span<const int32_t> ids, int64_t num_seqs, int64_t seq_len) const;

  // The token-embedding matrix as stored, for runtimes that embed on their own device: row id of Embed's output
  // is float(data[id]) (each of `cols` values converted exactly from `dtype`) times `scale` in fp32 (no multiply
  // when scale is 1). `data` points into the mapped checkpoint and lives as long as this CausalLm.
  struct EmbeddingTable {
    const uint8_t* data = nullptr;
    DType dtype = DType::kF32;
    int64_t rows = 0, cols = 0;
    float scale = 1.0f;
  };
  absl::StatusOr<EmbeddingTable> Embeddings() const;
  // Embed's check of the ids alone: OK, or its error naming the first id outside the vocabulary.
  absl::Status CheckTokenIds(absl::Span<const int32_t> ids) const;

  // Loads decoder block `layer` in fp32, calling hooks->OnWeightLoaded (if hooks) for each Linear in order.
  // Errors name the tensor at fault.
  absl::StatusOr<std::unique_ptr<DecoderBlock>> LoadBlock(int layer, LinearHooks* hooks = nullptr) const;

  // Runs `block` on x in place (see RunDecoderBlock).
  absl::Status RunBlock(const DecoderBlock& block, HiddenStates* x, LinearHooks* hooks = nullptr) const;

  // The final RMSNorm, in place. final_norm() is its effective scale (with spec().norm_offset).
  const std::vector<float>& final_norm() const { return final_norm_; }
  absl::Status ApplyFinalNorm(HiddenStates* x) const;

  // lm_head (the embedding matrix when tie_word_embeddings) in fp32 [vocab, hidden].
  absl::StatusOr<LinearWeight> LoadLmHead(LinearHooks* hooks = nullptr) const;

  // logits [rows, vocab] = x [rows, hidden] head^T, after hooks->OnInput(head, x) (if hooks); then
  // spec().final_softcap's softcapping when set.
  absl::Status Logits(const LinearWeight& head, const float* x, int64_t rows, float* logits,
                      LinearHooks* hooks = nullptr) const;

  // The whole forward pass of a small batch, for tests and tools: returns logits [num_seqs * seq_len, vocab].
  // `on_hidden(i, x)` (optional) sees the hidden states after the embedding (i = 0) and after each block
  // (i = layer + 1); the last block's output is shown after the final norm, as Hugging Face reports
  // `hidden_states`.
  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const int32_t> ids, int64_t num_seqs, int64_t seq_len,
      const std::function<void(int, const HiddenStates&)>& on_hidden = nullptr,
      LinearHooks* hooks = nullptr) const;

  // Turns activation quantization on or off for blocks and lm_heads loaded from now on (see
  // CausalLmOptions::quantize_activations). Turning it on fails, naming the scheme, when llmc cannot evaluate it.
  absl::Status SetQuantizeActivations(bool on);
  // Whether loaded blocks fake-quantize some activations: the option is on and the checkpoint quantizes some.
  bool quantizes_activations() const;
  // How the checkpoint stores its Linear weights, as `llmc eval` reports it (`weights`): the storage
  // (WeightLoader::StorageOf: "dense" or the compressed-tensors format) of the first decoder layer's MLP down
  // projection -- mlp.down_proj, or in a mixture-of-experts layer expert 0's (mlp.experts.0.down_proj,
  // block_sparse_moe.experts.0.w2), the module that exists in the checkpoint.
  std::string WeightStorage() const;

  // The RoPE table for sequences of up to seq_len tokens (cached; grows as needed): the global rope, or the one
  // `layer` uses (ModelSpec::rope_for). A returned reference stays valid until the next call with a longer seq_len.
  const RopeTable& Rope(int64_t seq_len) const;
  const RopeTable& Rope(int64_t seq_len, int layer) const;

 private:
  CausalLm() = default;
  // A norm weight [size] as its effective fp32 scale (+ spec_.norm_offset).
  absl::StatusOr<std::vector<float>> LoadNorm(const std::string& name, int64_t size) const;
  absl::StatusOr<LinearWeight> LoadLinear(const std::string& module, int layer, int64_t out, int64_t in,
                                          bool bias) const;
  // Sets w's input_quant/output_quant from the checkpoint when activation quantization is on.
  absl::Status AttachActivationQuant(LinearWeight* w) const;
  // Llama 4 experts stored as feed_forward.experts.{gate_up_proj,down_proj}: sliced into b->moe.{gate,up,down}.
  absl::Status LoadFusedExperts(int layer, DecoderBlock* b) const;

  std::unique_ptr<ModelDir> dir_;
  std::unique_ptr<WeightLoader> loader_;
  ModelSpec spec_;
  CausalLmOptions options_;
  std::unique_ptr<CpuContext> ctx_;
  std::vector<float> final_norm_;
  mutable std::unique_ptr<RopeTable> rope_, rope_local_;
};

}  // namespace llmc
