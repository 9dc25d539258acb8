// The LinearHooks that collect a calibration pass's statistics (calib_stats.h) while a block runs.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/calib/calib_stats.h"
#include "engine/model/architecture.h"
#include "engine/model/cpu_context.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/decoder_block.h"
#include "engine/model/linear_hooks.h"

namespace llmc {

// Collects `wants` from every Linear input of one block's passes, per input group (q/k/v and gate/up share their
// input: a repeated call with the same input is seen once). kv cache ranges are measured on k (after its norm and
// rotary embedding) and v as the cache stores them, from the block's host weights. `wants`, `spec`, `rope`,
// `block` and `ctx` must outlive the hooks. Not thread-safe (the runtime calls hooks from one thread).
class CalibHooks : public LinearHooks {
 public:
  CalibHooks(const Wants& wants, const ModelSpec& spec, const RopeTable* rope, const DecoderBlock* block,
             CpuContext* ctx)
      : wants_(wants), spec_(spec), rope_(rope), block_(block), ctx_(ctx) {}

  // The sequence length of the batch that runs next (samples = tokens / seq_len).
  void set_seq_len(int64_t t) { seq_len_ = t; }
  // The block runs on a device whose backend accumulates the wanted Hessians itself (Wants::device_hessian).
  void set_on_device(bool d) { on_device_ = d; }
  // Mixture-of-experts blocks: every expert sees every token (LinearHooks::SeeAllExperts).
  void set_see_all_experts(bool all) { see_all_experts_ = all; }
  bool SeeAllExperts() const override { return see_all_experts_; }
  // By input group.
  std::map<std::string, GroupStats>& stats() { return stats_; }
  float k_amax() const { return k_amax_; }
  float v_amax() const { return v_amax_; }
  // The ranges over every rank's samples (after a reduction).
  void set_kv_amax(float k, float v) {
    k_amax_ = k;
    v_amax_ = v;
  }

  absl::Status OnInput(const LinearWeight& w, absl::Span<const float> input, int64_t tokens) override;

 private:
  // k after its norm and rotary embedding, and v, as the kv cache stores them.
  absl::Status ObserveKv(const LinearWeight& w, const float* x, int64_t tokens);

  const Wants& wants_;
  const ModelSpec& spec_;
  const RopeTable* rope_;
  const DecoderBlock* block_;
  CpuContext* ctx_;
  int64_t seq_len_ = 0;
  bool on_device_ = false;
  bool see_all_experts_ = false;
  const float* last_ptr_ = nullptr;
  std::string last_group_;
  std::map<std::string, GroupStats> stats_;
  float k_amax_ = 0, v_amax_ = 0;
};

}  // namespace llmc
