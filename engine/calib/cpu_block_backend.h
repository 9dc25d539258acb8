// The CPU BlockBackend (block_backend.h): blocks run on the CPU runtime (CausalLm::RunBlock), activations and
// Hessians stay in host memory, GPTQ solves with GptqQuantize.
#pragma once

#include <memory>
#include <vector>

#include "engine/calib/block_backend.h"

namespace llmc {

// Runs blocks of `lm` (which must outlive it) over `batches`.
std::unique_ptr<BlockBackend> CreateCpuBlockBackend(CausalLm* lm, std::vector<HiddenStates> batches);

}  // namespace llmc
