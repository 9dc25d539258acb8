// AWQ's grid-search loss on the GPU (BlockView::DeviceAwqLoss, engine/algo/awq.h): for one mapping the captured
// inputs, the parent's Linears and the reference output stay on the device; each grid point uploads its scales
// (cols doubles), builds the trial weights Q(W s) / s with awq_kernels.cu, runs the parent (cuBLAS Linears and the
// decoder kernels CudaBlockRunner uses: qk norms, RoPE, causal attention, gated activation) and reduces the squared
// error on the device, returning one double. CPU reference: HostAwqLoss in engine/algo/awq.cc over
// DecoderBlockView::ParentForward; tests/gpu/cuda_awq_test.cc compares them. Built with the CUDA backend.
#pragma once

#include <memory>

#include "engine/backend/cuda/blas.h"
#include "engine/calib/awq_parent.h"
#include "engine/model/cuda_context.h"

namespace llmc {

// A factory of device evaluators on `ctx` (which must outlive it). GEMMs run in `precision`'s mode, bf16 taken as
// TF32 (the trial weights are fp32 values). Its evaluators handle integer weight schemes with the group or channel
// strategy and the three AwqParent kinds; for anything else Create returns null (the search stays on the host).
// Memory per evaluator: the captured inputs, the parent's Linears twice (as held and the trial), the reference
// and trial outputs and the parent's intermediate activations, all fp32.
std::unique_ptr<AwqDeviceLossFactory> CreateCudaAwqLossFactory(CudaContext* ctx, cuda::GemmPrecision precision);

}  // namespace llmc
