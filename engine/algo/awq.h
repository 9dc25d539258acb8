// AWQ (https://arxiv.org/abs/2306.00978) on one decoder block, as llm-compressor's AWQModifier (0.13,
// src/llmcompressor/modifiers/transform/awq/base.py) applies it: for each mapping, per input channel c of the
// balance Linears,
//
//   s_c = x_mean_c^r / (w_mean_c^(1-r) + 1e-4)   (duo scaling; x_mean_c^r without it), at least 1e-4,
//
// normalized by sqrt(max(s) * min(s)) (a NaN or Inf scale becomes 1), where x_mean_c = mean |x_c| over every
// calibration token and w_mean_c = the mean over the balance Linears' rows of |W[r, c]| / (max |W| of c's
// quantization group in that row + 1e-6), that quotient taken in the model dtype (AwqWeightMeans). The grid
// (AwqGrid): with duo_scaling, the identity (r = 0 without duo scaling, s = 1) and then r = i / (n_grid - 2) with
// duo scaling for i in [0, n_grid - 1); without it r = i / (n_grid - 1) for i in [0, n_grid); with duo_scaling: both
// r = i / (n - 1) for i in [0, n), n = n_grid / 2, each without and then with duo scaling. All end at r = 1.
// For each point the balance weights become Q(W s) / s (AwqTrialWeight: W s rounded to the model dtype,
// quantize-dequantized with their scheme, divided by s and rounded again) and the point whose weights give the
// parent module's output (BlockView::ParentForward, on the inputs captured for the search) closest in mean squared
// error to the original output wins; the first point wins ties. The smooth module then absorbs 1/s (a norm's
// weights, or a Linear's output rows and bias) and the balance Linears' columns s, all rounded to the model dtype.
//
// Where the view offers a device evaluator (BlockView::DeviceAwqLoss, the CUDA backend) the grid points' losses
// are computed there; the scales, the choice and the application stay here, so both paths choose from the same
// candidates.
//
// Mappings resolve in the block (ResolveAwqMappings): the balance Linears are those a `balance` target names, minus
// `ignore`; the smooth module is the first norm its `smooth` target names, else a Linear. When the smooth target
// names several Linears (every expert's up_proj of a mixture-of-experts layer), the mapping resolves once per smooth
// Linear, with the balance Linears of the same parent module (its expert's down_proj), as llm-compressor's
// match_modules_set pairs them. A mapping is skipped when nothing matches, when a smooth Linear's outputs are not
// the balance Linears' inputs (v_proj -> o_proj under grouped-query attention) or when a balance Linear other than a
// router (BlockView::IsRouter) is not quantized. A router among the balance Linears (llm-compressor's MoE mapping
// post_attention_layernorm -> router + every expert's gate/up) is scaled with them so the routing is unchanged, but
// is neither quantized in the search nor counted in the weight means, as in llm-compressor, where it has no scheme.
// The statistics and captured inputs are balance[0]'s: for that MoE mapping the router's, which sees every token;
// for an expert's up -> down mapping the expert's down input, which sees the tokens the calibration ran through the
// expert (every token with moe_calibrate_all_experts, its routed ones otherwise), as llm-compressor's hooks do.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/algo/block_view.h"
#include "engine/format/algorithms.h"

namespace llmc {

// The inputs AWQ's search keeps, at most this many tokens (whole sequences) per input.
inline constexpr int64_t kAwqCaptureTokens = 16384;

// One mapping resolved in a block: the smooth module (a norm or a Linear) and the balance Linears it feeds, by name,
// in the block's order.
struct AwqResolved {
  std::string target;  // the mapping's smooth target, as the recipe gives it
  std::string smooth;
  bool smooth_is_norm = false;
  std::vector<std::string> balance;
};
// Resolves `params`' mappings over a block's `norms` and `linears` (module names in forward order), as the file
// comment says, in mapping order. `routers` (names among `linears`) stay balance layers even when `ignore` names
// them: the recipe ignores routers for quantization, and leaving one out of its norm's balance layers would change
// the routing. Nothing is checked for quantization here.
std::vector<AwqResolved> ResolveAwqMappings(const AwqParams& params, const std::vector<std::string>& norms,
                                            const std::vector<std::string>& linears,
                                            const std::vector<std::string>& routers = {});

// The Linears whose inputs AWQ needs (the sum of |x| per channel over every calibration token, and up to
// kAwqCaptureTokens captured tokens): balance[0] of every resolved mapping (a Llama block: q_proj, o_proj,
// gate_proj, down_proj; a mixture-of-experts block: the router and every expert's down_proj too).
std::vector<std::string> AwqInputs(const AwqParams& params, const std::vector<std::string>& norms,
                                   const std::vector<std::string>& linears,
                                   const std::vector<std::string>& routers = {});

// What AWQ chose for one mapping.
struct AwqChoice {
  std::string smooth;      // the mapping's smooth target (a norm), or the smooth Linear's name
  std::string balance;     // the first balance Linear
  double ratio = 0;        // the winning r
  bool duo = true;         // whether the winning point used duo scaling (false: the identity, or duo_scaling off)
  double loss = 0;         // its mean squared error of the parent's output
  double initial_loss = 0; // the first grid point's (with duo_scaling: the identity's, i.e. plain RTN's)
  bool on_device = false;  // the losses were computed by BlockView::DeviceAwqLoss
};

// One point of the search grid.
struct AwqGridPoint {
  double ratio = 0;
  bool duo = true;
};
// The grid of the file comment; with `both` (duo_scaling: both) n = n_grid / 2 ratios r = i / (n - 1), each first
// without and then with duo scaling (the first point is the identity). INVALID_ARGUMENT for n_grid < 3 with duo
// scaling, n_grid < 2 without, n_grid < 4 with both (the library divides by n_grid - 2, n_grid - 1, n - 1).
absl::StatusOr<std::vector<AwqGridPoint>> AwqGrid(int n_grid, bool duo_scaling, bool both = false);

// w_mean over `weights` ([out_features, cols] each, model-dtype values in fp32) quantized with `args` (groups of
// args.group_size columns, whole rows for the channel strategy, the whole tensor for the tensor strategy): the
// quotients |w| / (amax + 1e-6) rounded to `dtype` as the library computes them in the model dtype, summed in fp64.
// INVALID_ARGUMENT for other strategies or a group size that does not divide cols.
absl::StatusOr<std::vector<double>> AwqWeightMeans(absl::Span<const LinearWeight* const> weights,
                                                   const QuantArgs& args, DType dtype);

// The normalized scales of one grid point (fp64; NaN and Inf become 1).
std::vector<double> AwqScales(absl::Span<const double> x_mean, absl::Span<const double> w_mean,
                              const AwqGridPoint& point);

// Q(W diag(s)) diag(s)^-1 for w [rows, cols] under `group`'s weight scheme in `dtype`: W s rounded to dtype,
// round-to-nearest quantize-dequantize (QuantizeWeight / DequantizeWeight with the memoryless min-max observer, as
// the library's search uses whatever the scheme's observer), the dequantized value rounded to dtype (the library
// dequantizes in it), divided by s and rounded to dtype. Every weight scheme llmc writes works: integer, FP8
// (tensor, channel, block), NVFP4 and MX. `global_scale`: NVFP4's, shared by a fused group (q/k/v, gate/up) as the
// library's fused observers share it in the search; absent: the tensor's own.
// Errors of the quantizer as they come (naming `module`).
absl::StatusOr<std::vector<float>> AwqTrialWeight(const std::string& module, const std::vector<float>& w, int64_t rows,
                                                  int64_t cols, const ConfigGroup& group, DType dtype,
                                                  absl::Span<const double> s,
                                                  std::optional<float> global_scale = std::nullopt);

// Searches and applies the scales of every mapping of `params` that resolves in `block` (see the file comment),
// in mapping order: a mapping sees the block as the earlier ones left it. A mapping whose first balance Linear is an
// expert's (BlockView::IsExpert) that no calibration token reached (routed-only calibration) is skipped, as
// llm-compressor skips it. FAILED_PRECONDITION naming the module when another mapping's input has no statistics, INVALID_ARGUMENT when no grid point
// gives a finite loss (NaN or Inf in the activations); errors of the quantizer or of ParentForward as they come.
absl::StatusOr<std::vector<AwqChoice>> ApplyAwq(const AwqParams& params, BlockView* block);

}  // namespace llmc
