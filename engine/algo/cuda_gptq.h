// GPTQ on the GPU: GptqQuantize's contract and results (engine/algo/gptq.h) computed with CUDA, cuBLAS and
// cuSOLVER (kernels in engine/backend/cuda/gptq_kernels.h). Built only with the CUDA backend (llmc_algo_cuda).
//
// What runs where:
//  * host: validation, the strategy / activation order (ResolveActOrder), the permutation (stable argsort of
//    diag(H), descending), the quantization parameters (GroupQuantizer::Observe on the unmodified or permuted
//    weight, exactly as GptqQuantize; groups are observed on several threads, each on its own copy of the
//    quantizer, while the GPU factors the Hessian), dead columns and the dampening value (from diag(H), in
//    GptqQuantize's summation order), the loss total (per-row fp64 sums added in row order);
//  * device: the NaN/Inf and zero scans, permutations, keep mask, the factor U = chol(chol_inverse(chol(H +
//    damp I)))^T in fp64 (or fp32 with double_precision_inverse = false; cuSOLVER potrf / potri / potrf), the
//    column walk of each block (one thread per row, the CPU's operations in the same order, the fake quantization
//    bit-exact with GroupQuantizer::FakeQuant) and the trailing update W[:, i2:] -= Err U[i1:i2, i2:] (cuBLAS
//    SGEMM, IEEE fp32, no TF32).
// Results: the same as GptqQuantize up to the SGEMMs' summation order and the last bit of U (cuSOLVER vs
// LAPACK), i.e. nearly every value equal (a code flips where w / scale lands within rounding of a half step,
// which then moves that row's later values slightly) and the loss to ~1e-5 relative. Everything else (scales,
// g_idx, dead columns, zero preservation, the RTN fallback and its warning) is identical.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/algo/gptq.h"
#include "engine/model/cuda_context.h"
#include "engine/quant/group_quantizer.h"

namespace llmc {

// Whether CudaGptqQuantize can run `q`'s scheme: the integer schemes (pack-/int-/naive-quantized int: group,
// channel, tensor; symmetric and asymmetric) and fp8 e4m3 (float-quantized: channel, tensor, group) with bf16,
// fp16 or fp32 model dtypes, for weights of at most 46340 input columns (cuSOLVER's 32-bit potri). NVFP4 and MX
// formats report false: callers use GptqQuantize on the CPU. GroupQuantizer does not expose its scheme, so the
// arithmetic is recognized from the parameters' layout and by comparing FakeQuant with this path's own on a
// fixed set of probes (bit for bit); any scheme that does not match exactly reports false. Thread-compatible.
bool CudaGptqSupports(const GroupQuantizer& q);

// GptqQuantize (engine/algo/gptq.h) on the GPU of `ctx`, with the same contract, options and errors, except:
//  * `weight` [rows, cols] is host memory (fp32, row-major; not modified);
//  * `d_hessian` [cols, cols] is DEVICE memory of ctx's device (fp32 row-major H = 2/N X^T X; not modified);
//  * UNIMPLEMENTED when !CudaGptqSupports(*quantizer); RESOURCE_EXHAUSTED / INTERNAL for CUDA failures (device
//    memory: about cols^2 * 12 bytes with the fp64 factor (8 with fp32), plus 2 * rows * cols * 4 bytes, one
//    rows * cols byte mask with zero preservation, and rows * cols * 4 more for its trailing products);
//  * options.num_threads sets the host threads that observe groups (0 = hardware concurrency).
// Only the result weight and the per-row losses come back to the host. Runs on ctx->stream() and synchronizes it
// before returning. Not thread-safe with other users of `ctx` (CudaContext is used from one thread at a time).
absl::StatusOr<GptqResult> CudaGptqQuantize(absl::string_view module, const float* weight, int64_t rows,
                                            int64_t cols, const float* d_hessian, int64_t num_samples,
                                            GroupQuantizer* quantizer, const GptqOptions& options, CudaContext* ctx);

}  // namespace llmc
