// The solve stage of the sequential pipeline for one quantized Linear: GPTQ (through the BlockBackend, with its
// input group's Hessian) when the recipe has it, else round-to-nearest; the compressed values replace the weight
// so the block propagates with them; then the module's tensors are encoded (the weight format's, weight_g_idx,
// static input scales) and emitted, and its report entry is written. Where the backend runs off the host, the
// encoding and writing run on a pool of host threads beside the next solves.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "engine/calib/block_backend.h"
#include "engine/calib/calib_stats.h"
#include "engine/format/algorithms.h"
#include "engine/pipeline/compress_job.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {

// Solve() and Finish() are called from one thread; the pool threads only encode, emit and report.
class ModuleSolver {
 public:
  // `recipe`, `config` and `backend` must outlive it. `model_dtype` is the dtype static input scales are observed
  // in; `threads` the CPU threads of a solve (0: all). With `background`, finishing runs on a pool of
  // max(2, threads) threads (hardware concurrency for 0); otherwise inside Solve().
  ModuleSolver(const CompressionRecipe& recipe, const QuantConfig& config, BlockBackend* backend, DType model_dtype,
               int threads, bool background);
  ~ModuleSolver();

  // The tensors a module of config group `group` writes beyond its weight format's, in order: weight_g_idx (GPTQ
  // with activation ordering "group"), input_scale (static activations, in `dtype`), input_global_scale (NVFP4
  // activations). Errors name the module (an actorder that cannot be resolved).
  absl::StatusOr<std::vector<OutputTensor>> ExtraTensors(const std::string& module, int group, int64_t cols,
                                                         DType dtype) const;

  // Quantizes `lw` (config group `group`; stored as `wdtype`; `global_scale`: the fused NVFP4 global scale, if
  // any) and leaves the compressed values, rounded to wdtype, in lw->weight. `st` holds its input group's
  // statistics (null when none were collected) and `keep` the pruning mask GPTQ preserves (or null); both must
  // stay alive until Wait() or Finish(). `info` is the module's report entry so far. Appends GPTQ's fallback
  // warnings to `warnings`. The module's tensors go to `emit`, inline or on the pool.
  absl::Status Solve(LinearWeight* lw, int group, DType wdtype, std::optional<float> global_scale,
                     const GroupStats* st, const std::vector<uint8_t>* keep, const nlohmann::json& info,
                     const EmitFn& emit, std::vector<std::string>* warnings);

  // Waits until the modules solved so far are written.
  void Wait();
  // Wait()s; then the first error of a module written on the pool, or OK, with the finished modules' report
  // entries appended to `modules` (batch by batch, each in name order).
  absl::Status Finish(nlohmann::json* modules);

  // Batches: the modules solved since the last Seal() (a decoder block's) form a batch, whose writing can be
  // waited for alone while the next batch is being solved. Seal() returns the batch's id and starts the next.
  int64_t Seal();
  // Waits until batch `batch`'s modules are written; then the first error of any module written on the pool, or
  // OK, with the batch's report entries appended to `modules` in name order. May run on another thread than
  // Solve(), one call at a time.
  absl::Status Finish(int64_t batch, nlohmann::json* modules);

 private:
  // The scale of a static input (per tensor, symmetric) from its observed range, as the library's observer computes
  // it, in the model dtype.
  absl::StatusOr<float> StaticInputScale(const std::string& module, const QuantArgs& in, const GroupStats& st) const;

  // Weight-sized buffers of finished modules, reused by later solves of the same size (each block repeats the
  // last one's shapes): GPTQ's result and the block's copy of it then land in memory already paged in instead
  // of fresh allocations that are zero-filled and faulted in page by page. At most kMaxSpareBytes are kept.
  static constexpr size_t kMaxSpareBytes = size_t{2} << 30;
  // A buffer of exactly n floats (a spare one when there is one; contents unspecified).
  std::vector<float> TakeBuffer(size_t n);
  void ReturnBuffer(std::vector<float> v);

  const CompressionRecipe& recipe_;
  const QuantConfig& cfg_;
  BlockBackend* backend_;
  DType dtype_;
  int threads_;
  int finish_threads_ = 1;  // threads that encode and measure one large module
  std::unique_ptr<ThreadPool> pool_;
  std::mutex mu_;
  std::condition_variable written_;                  // a batch's count of modules in writing went down
  absl::Status error_;                               // guarded by mu_
  int64_t batch_ = 0;                                // guarded by mu_: the batch Solve() adds to
  std::map<int64_t, int> writing_;                   // guarded by mu_: modules on the pool, per batch
  std::map<int64_t, std::map<std::string, nlohmann::json>> reports_;  // guarded by mu_: per batch, by name
  std::vector<std::vector<float>> spare_;            // guarded by mu_
  size_t spare_bytes_ = 0;                           // guarded by mu_
};

}  // namespace llmc
