// The CUDA BlockBackend (block_backend.h): the calibration activations live on the GPU between blocks, blocks run
// with CudaBlockRunner, GPTQ's Hessians accumulate on the device (cuBLAS SYRK) and GPTQ solves there
// (CudaGptqQuantize) for the schemes it supports, else on the host from a copy of the Hessian. Statistics other
// than GPTQ's Hessians go through the host hooks (a copy of each Linear input). cuda_block_backend.cc is built
// with the CUDA backend; without it, cuda_block_backend_unavailable.cc says so.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/calib/block_backend.h"

namespace llmc {

// Embeds `batches` a slice at a time into device 0's memory (or pinned host memory, options.activations "host")
// and runs blocks of `lm` (which must outlive it) there. FAILED_PRECONDITION without CUDA support or a usable device
// ("use --device cpu"); INVALID_ARGUMENT for a GEMM precision other than fp32, tf32 or bf16 or activations other
// than fp32, bf16 or host; RESOURCE_EXHAUSTED when the activations do not fit.
absl::StatusOr<std::unique_ptr<BlockBackend>> CreateCudaBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                     CalibBatches batches);

}  // namespace llmc
