// The sequential calibration pipeline (DESIGN.md): embed the calibration samples; per decoder block: load it,
// (smooth), calibrate (run the block with hooks that collect each Linear's input statistics), solve (prune and
// quantize each module), propagate (rerun the block with the compressed weights to get the next block's
// inputs) and emit the block's tensors to the checkpoint writer at once.
//
// Distribution is explicit in the structure even with one process: the calibration samples are a shard
// (`Communicator::rank()`'s slice), statistics are reduced with `Communicator::AllReduceSum/Max` before any
// solve, and each module has an owner rank that solves it and broadcasts the result. SingleRank is the
// one-process implementation; NCCL and Gloo ones plug in behind the same interface (engine/dist).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/data/calibration_data.h"
#include "engine/dist/communicator.h"
#include "engine/format/algorithms.h"
#include "engine/pipeline/compress_job.h"

namespace llmc {

struct SequentialOptions {
  std::string model_path;
  std::string dataset;              // calibration data file (text or JSONL)
  CalibrationOptions calibration;   // samples, length, seed, mode
  int threads = 0;                  // CPU threads (0: all)
  int64_t max_chunk_tokens = 4096;  // block-forward chunk (memory bound; no effect on results)
  Communicator* comm = nullptr;     // null: SingleRank
  // "cpu" or "cuda": where the blocks run, statistics accumulate and GPTQ solves (activations stay on the device).
  std::string device = "cpu";
  std::string gemm_precision = "tf32";  // cuda: fp32, tf32 (default) or bf16 block GEMMs
  // cuda: where the calibration activations stay between blocks: fp32 (device), bf16 (device) or host (bf16,
  // pinned host memory); "" is the default (BlockBackendOptions::activations). cpu: fp32 only.
  std::string calib_activations;
  // Mixture-of-experts models: every expert's statistics see every calibration token (the routed output still
  // propagates); false: each expert sees its routed tokens only, and an expert no token chose is quantized
  // round-to-nearest (a warning says which). Unset: true. Set on a dense model: INVALID_ARGUMENT.
  std::optional<bool> moe_calibrate_all_experts;
  // Whether solved modules are encoded and written on a pool of host threads beside the next solves, and a block's
  // last ones beside the next block (its commit waits for them). Unset: where the blocks run off the host (cuda).
  // The output is the same bytes either way.
  std::optional<bool> background_writes;
};

class SequentialSolver : public LayerSolver {
 public:
  // Opens the model, tokenizes the calibration data and checks that the recipe can run on this model, so
  // that every input error surfaces before any output is planned. `recipe` and `config` must outlive it.
  static absl::StatusOr<std::unique_ptr<SequentialSolver>> Create(const SequentialOptions& options,
                                                                  const CompressionRecipe& recipe,
                                                                  const QuantConfig& config);
  ~SequentialSolver() override;

  absl::StatusOr<std::vector<OutputTensor>> ExtraModuleTensors(const std::string& module, int group, int64_t rows,
                                                             int64_t cols, DType dtype) const override;
  std::vector<TensorSpec> ExtraTensors() const override;
  // The text decoder's layers ("model.layers.", or a vision-language checkpoint's, e.g.
  // "model.language_model.layers.").
  std::string LayersPrefix() const override;
  absl::Status Run(const SolverIo& io) override;
  nlohmann::json Report() const override;

  // Warnings from data loading and solving (short samples, Hessian fallbacks, ...).
  const std::vector<std::string>& warnings() const;

  class Impl;

 private:
  explicit SequentialSolver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmc
