// Queries and keys as attention reads them, after their projections: the per-head qk norms (Qwen3, Gemma 3), the
// rotary embedding, and Llama 4's layer kinds (rope layers rotate interleaved pairs and then L2-normalize q and k;
// no-rope layers skip the rotation and scale q by position, ModelSpec::query_temperature). One definition for the
// block's forward pass and for the code that recomputes attention beside it (AWQ's attention parent, the kv-cache
// observer), so they cannot drift apart.
#pragma once

#include <cstdint>

#include "engine/model/architecture.h"
#include "engine/model/cpu_context.h"
#include "engine/model/cpu_ops.h"

namespace llmc {

// q [seqs * T, spec.q_size()] (may be null: keys only) and k [seqs * T, spec.kv_size()] in place, for `layer`.
// q_norm / k_norm are the block's per-head norm weights (read only when spec.qk_norm).
void PrepareQueriesAndKeys(const ModelSpec& spec, int layer, const float* q_norm, const float* k_norm,
                           const RopeTable& rope, int64_t seqs, int64_t T, float* q, float* k, CpuContext* ctx);

}  // namespace llmc
