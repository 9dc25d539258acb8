// GPTQ (https://arxiv.org/abs/2210.17323) for one Linear weight, as llm-compressor's GPTQModifier runs it
// (src/llmcompressor/modifiers/quantization/gptq/gptq_quantize.py `quantize_weight`, base.py
// `resolve_quantization_config`):
//
//  * quantization parameters come from the *unmodified* weight, all groups up front (the library calls its
//    memoryless min-max observer once on the whole weight; GPTQ's error updates never change a scale);
//  * activation ordering permutes the columns by descending H_ii (stable for ties here):
//      "static" = "weight": groups are the original consecutive columns (scales observed before permuting),
//               the solve runs in the permuted order, the result is unpermuted; nothing extra is stored.
//      "group"  = "dynamic": the weight is permuted first and groups are consecutive *permuted* columns; the
//               result is unpermuted and `weight_g_idx` (column -> group) is stored (WeightQParams::g_idx).
//      "none": natural order.
//    Only the group and tensor_group strategies permute (the library ignores actorder for channel/tensor);
//  * dead columns (H_ii == 0) are zeroed in the weight, H_ii set to 1; dampening, the Cholesky factor of the
//    inverse and its fallback are InverseHessianFactor's (inverse_hessian.h);
//  * the lazy blocked update: columns in blocks of block_size; inside a block column i is fake-quantized,
//    err = (w - q) / U_ii, the rest of the block is updated at once, the trailing columns after each block by
//    one GEMM (OpenBLAS sgemm);
//  * the loss it logs: sum over rows and columns of (w - q)^2 / U_ii^2 / 2 (w the updated column);
//  * sparsity preservation: when at least 5% of the weight is exactly zero (the library's SPARSITY_THRESHOLD),
//    weights with |w| <= 1e-8 (torch.isclose(w, 0)) are never updated, so a weight pruned by SparseGPT/Wanda stays
//    zero after quantization (llm-compressor's SparseGPT itself does not quantize; a recipe that prunes and
//    quantizes runs GPTQ after it). `keep_mask` overrides that rule.
//  * Hessian failure: when H (dampened) is not positive definite the library warns and uses U = identity, i.e.
//    round-to-nearest of the weight with the scales above; GptqResult says so (fell_back_to_rtn, warning).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/format/actorder.h"
#include "engine/format/quant_scheme.h"
#include "engine/quant/group_quantizer.h"

namespace llmc {

struct GptqOptions {
  int block_size = 128;         // GPTQModifier.block_size
  double dampening_frac = 0.01;  // GPTQModifier.dampening_frac
  // GPTQModifier.actorder ("none", "static", "weight", "group", "dynamic"). With `weight_args`, it is resolved
  // against the scheme by ResolveActOrder; without, it applies to group-strategy weights only (the strategy is
  // inferred from the quantizer: scales per row and a group narrower than the row, no NVFP4 global scale).
  std::string actorder = "static";
  // The module's weight QuantizationArgs (not owned; may be null, see actorder).
  const QuantArgs* weight_args = nullptr;
  // Which weights GPTQ may change, [rows * cols] row-major, non-zero = may be updated; 0 = a pruned weight that
  // keeps its value (0) and is quantized as is. Null: the library's automatic rule (see the file comment).
  const std::vector<uint8_t>* keep_mask = nullptr;
  // Factor the Hessian in fp64 (default; more robust) or fp32 as the library does.
  bool double_precision_inverse = true;
  // Threads for the per-column work inside a block (rows are independent); 0 = hardware concurrency. The GEMMs
  // use OpenBLAS's own threads.
  int num_threads = 0;
  // Memory for GptqResult::weight (not owned; may be null). When given, its buffer is moved into the result and
  // reused (say an earlier result of the same shape, already paged in) instead of a fresh allocation that is
  // zero-filled and page-faulted; the vector is left empty. Its contents do not matter.
  std::vector<float>* result_storage = nullptr;
};

struct GptqResult {
  std::vector<float> weight;  // [rows, cols] fp32, fake-quantized values in the original column order (the library
                              // then stores them rounded to the model dtype)
  WeightQParams params;       // the quantizer's parameters; g_idx set only for actorder group/dynamic
  double loss = 0;            // as the library logs it (CompressionLogger's loss)
  ActOrder actorder = ActOrder::kNone;  // what ran
  bool preserved_zeros = false;         // a keep mask was applied (explicit or the automatic rule)
  int64_t dead_columns = 0;             // columns with H_ii == 0 (set to zero)
  bool fell_back_to_rtn = false;        // H could not be factored: round-to-nearest (see warning)
  std::string warning;                  // the warning naming the module, when fell_back_to_rtn
};

// Runs GPTQ on `weight` [rows, cols] (row-major fp32, the model's values; not modified) with `hessian`
// [cols, cols] (row-major fp32 H = 2/N X^T X, e.g. HessianAccumulator::Hessian(); not modified; the solution does
// not depend on its scale, the loss does). `num_samples` is the N H was built from; 0 means the module saw no
// calibration data, which is an error (FAILED_PRECONDITION; the library fails such a run). `quantizer` is created
// by the caller for this weight (GroupQuantizer::Create, with the fused NVFP4 global scale); GptqQuantize
// observes every group on it and leaves its parameters set (g_idx included) for EncodeQuantizedWeight.
//
// Fails with INVALID_ARGUMENT naming `module` on shape mismatches, bad options, or NaN/Inf in the weight or the
// Hessian. A Hessian that cannot be factored is not an error: see GptqResult::fell_back_to_rtn (also logged).
// Memory: a [rows, cols] working copy that becomes the result (plus one more with activation ordering, two more
// when zeros are preserved), one [cols, cols] buffer of doubles (InverseHessianFactor) and two [block_size, rows]
// blocks. Thread-compatible: concurrent calls on different quantizers are fine.
absl::StatusOr<GptqResult> GptqQuantize(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                                        const float* hessian, int64_t num_samples, GroupQuantizer* quantizer,
                                        const GptqOptions& options = {});

}  // namespace llmc
