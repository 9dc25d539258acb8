// Where the sequential pipeline runs its blocks: the calibration passes (a block's forward with statistics hooks),
// the propagation of the activations to the next block, and GPTQ's solve. A backend owns this rank's calibration
// activations X_i between blocks. Implementations: the CPU runtime (cpu_block_backend.h) and, in builds with CUDA,
// the GPU (cuda_block_backend.h), where activations, Hessians and GPTQ stay on the device.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/algo/gptq.h"
#include "engine/calib/awq_parent.h"
#include "engine/calib/calib_hooks.h"
#include "engine/calib/calib_stats.h"
#include "engine/dist/communicator.h"
#include "engine/model/causal_lm.h"
#include "engine/model/decoder_block.h"
#include "engine/quant/group_quantizer.h"

namespace llmc {

// Not thread-safe: the pipeline drives a backend from one thread.
class BlockBackend {
 public:
  virtual ~BlockBackend() = default;

  // Runs `block` over a copy of every batch of activations (which stay as they are), `hooks` collecting `wants`.
  // Statistics a backend keeps in its own memory (device Hessians) are put in hooks->stats() too.
  virtual absl::Status Calibrate(const DecoderBlock& block, const Wants& wants, CalibHooks* hooks) = 0;

  // Runs `block` over every batch in place: the next block's inputs. INVALID_ARGUMENT when the activations turn
  // NaN or Inf (where the backend checks).
  virtual absl::Status Propagate(const DecoderBlock& block) = 0;

  // GPTQ (GptqQuantize's contract) of `module`'s `weight` [rows, cols] with the statistics of its input group
  // (`st`, null when none were collected: INTERNAL). This implementation solves on the host with st->hessian;
  // backends that keep Hessians themselves override it.
  virtual absl::StatusOr<GptqResult> Gptq(const std::string& module, const float* weight, int64_t rows, int64_t cols,
                                          const GroupStats* st, GroupQuantizer* quantizer, const GptqOptions& options);

  // Sums the statistics of `st` this backend keeps in its own memory (device Hessians and their counts) over the
  // ranks of `comm` (a collective: every rank calls it for the same groups in the same order).
  virtual absl::Status ReduceDeviceStats(GroupStats* st, Communicator* comm) { return absl::OkStatus(); }

  // Where AWQ's grid search computes its losses (DecoderBlockView's awq_device): null (the default) for the host.
  // Owned by the backend; valid while it is.
  virtual AwqDeviceLossFactory* awq_device_loss() { return nullptr; }

  // Whether the block forward and GPTQ run off the host's CPU threads: the pipeline then loads the next block and
  // encodes solved modules on host threads meanwhile.
  virtual bool runs_off_host() const { return false; }

  // The backend's figures for a block's report (called after its propagation) and for the run's report.
  virtual void ReportBlock(nlohmann::json* block_report) {}
  virtual void Report(nlohmann::json* report) const {}
};

struct BlockBackendOptions {
  std::string device = "cpu";           // "cpu" or "cuda"
  std::string gemm_precision = "tf32";  // cuda: fp32, tf32 or bf16 block GEMMs
  // cuda: where the calibration activations stay between blocks: "fp32" (device, exact), "bf16" (device, rounded
  // to bf16 between blocks: half the memory) or "host" (bf16 in pinned host memory, streamed through the GPU a
  // slice at a time: for activations that do not fit the device). "" is fp32. The cpu backend takes fp32 only.
  std::string activations;
  int64_t max_chunk_tokens = 4096;      // block-forward chunk (memory bound; no effect on results)
  int64_t num_samples = 0;              // every rank's calibration samples (the N of H = 2/N X^T X)
};

// This rank's calibration batches, embedded when a backend asks for them: batch b holds shapes[b] = (num_seqs,
// seq_len) equal-length sequences; embed(b, first, n) returns sequences [first, first + n) of it. A backend that
// keeps the activations off the host embeds a slice at a time, so the host never holds them all.
struct CalibBatches {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  std::function<absl::StatusOr<HiddenStates>(size_t batch, int64_t first_seq, int64_t num_seqs)> embed;
  // The token ids of batch `batch` (num_seqs * seq_len of them, sequence after sequence), for backends that embed
  // on their device (CausalLm::Embeddings); unset where the batches come embedded. Must outlive the backend's start.
  std::function<absl::Span<const int32_t>(size_t batch)> token_ids;

  // Batches already embedded (tests): embed copies the asked-for sequences.
  static CalibBatches FromHiddenStates(std::vector<HiddenStates> batches);
  // Every batch embedded whole (the cpu backend's activations).
  absl::StatusOr<std::vector<HiddenStates>> EmbedAll() const;
};

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                 CalibBatches batches);

// The backend for options.device, taking this rank's embedded calibration batches (equal-length sequences per
// batch) and running blocks of `lm` (which must outlive it). INVALID_ARGUMENT for a device other than cpu or
// cuda; FAILED_PRECONDITION for cuda in a build without CUDA or without a usable device; INVALID_ARGUMENT for an
// unknown GEMM precision; RESOURCE_EXHAUSTED when the activations do not fit the device.
absl::StatusOr<std::unique_ptr<BlockBackend>> CreateBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                 std::vector<HiddenStates> batches);

}  // namespace llmc
