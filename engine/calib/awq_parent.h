// The parent module of one AWQ mapping, as DecoderBlockView::ParentForward runs it, described for an evaluator of
// AWQ's loss on another device (BlockView::DeviceAwqLoss): which Linears it reads (and which of them the search
// replaces), the rest of the block it needs, and the captured inputs it runs on.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/algo/block_view.h"
#include "engine/format/quant_config.h"
#include "engine/model/architecture.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/decoder_block.h"
#include "engine/tensor/dtype.h"

namespace llmc {

struct AwqParent {
  enum class Kind {
    kAttention,  // q/k/v (or qkv_proj) -> qk norms -> rope -> causal attention -> o_proj: o_proj's output
    kMlp,        // gate/up (or gate_up_proj) -> gated activation -> down_proj: down_proj's output
    kLinear,     // the single balance Linear's output
  };
  Kind kind = Kind::kLinear;
  const DecoderBlock* block = nullptr;  // norms, o_proj, down_proj, layer (may be null for kLinear)
  const ModelSpec* spec = nullptr;      // may be null for kLinear
  const RopeTable* rope = nullptr;      // kAttention: the table for captured_seq_len tokens of this layer
  // The Linears the parent reads its input with, in order (q, k, v | qkv_proj; gate, up | gate_up_proj; the Linear).
  std::vector<const LinearWeight*> members;
  // Per member: its index in `balance`, or -1 when the search leaves it as held.
  std::vector<int> balance_index;
  std::vector<const LinearWeight*> balance;
  std::vector<const ConfigGroup*> groups;  // per balance Linear: its weight scheme (never null)
  DType dtype = DType::kBF16;
  const float* input = nullptr;  // [rows, members[0]->in_features] the captured inputs, whole sequences
  int64_t rows = 0;
  int64_t seq_len = 0;
  int64_t out_features = 0;  // of the parent's output
};

// Makes AWQ loss evaluators on a device. Not thread-safe.
class AwqDeviceLossFactory {
 public:
  virtual ~AwqDeviceLossFactory() = default;
  // An evaluator for `parent` (which must outlive it, as must what it points to), or null when the device cannot run
  // this parent or scheme (the search then runs on the host). Errors of the device as they come.
  virtual absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> Create(const AwqParent& parent) = 0;
};

}  // namespace llmc
