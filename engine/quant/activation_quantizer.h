// Fake quantization of activations (a Linear's input or output, the kv cache) as compressed-tensors 0.18's
// forward pass computes it (quantization/lifecycle/forward.py `forward_quantize` -> `fake_quantize`), so that a
// checkpoint whose quantization_config quantizes activations is evaluated the way the library's readers run it.
//
// What is evaluated, per QuantizationArgs (anything else is refused by Check with a message naming it):
//   int, symmetric, 2..8 bits:   dynamic per token, dynamic per group of columns, static per tensor
//   float 8 (e4m3), symmetric:   dynamic per token, dynamic per group of columns, static per tensor
//   float 4 (NVFP4):             tensor_group, dynamic "local", group_size 16, fp8 e4m3 group scales from the
//                                static `<name>_global_scale`
//   kv cache (k after rotary embedding, v): static per tensor, or static per head (attn_head), int or fp8
// Refused: asymmetric activations, dynamic per-tensor scales (the library computes them over whatever batch the
// reader runs, so no figure is reproducible), static per-channel/group/block activation scales, MX (e8m0)
// activation scales, and dynamic kv-cache scales.
//
// Arithmetic (every step rounded to the model dtype D as PyTorch does for a D tensor, `R(.)`):
//   x <- R(x)                                               (the reader's activations are D tensors)
//   dynamic int/fp8:  amax = max(|min(x, 0)|, max(x, 0)) over the token (or group);
//                     scale = R(amax / ((qmax - qmin) / 2)) (int: qmax - qmin = 2^bits - 1, fp8: 896),
//                     a zero scale becomes eps(D)
//   static int/fp8:   scale = the stored `<name>_scale` (a D value)
//   int:   y = R(rint(clamp(R(x / scale), qmin, qmax)) * scale)                    (rint: half to even)
//   fp8:   y = R(e4m3(clamp(R(x / scale), -448, 448)) * scale)
//   NVFP4: per group of 16: s = e4m3(clamp(g * R(amax / 6), -448, 448)) (0 -> 0.125), with g the fp32 global
//          scale; e = s / g (fp32); y = R(fp4(clamp(x / e, -6, 6)) * e)               (x / e in fp32)
//          The fp4 cast takes the fp32 quotient unrounded: the library's fake quantization
//          (`_quantize_dequantize`) casts with the eager `cast_to_fp4` on CPU and CUDA alike; its Triton cast,
//          which rounds to bf16 first, is registered with priority "disable" and never runs.
//   clamp is torch.clamp (std::clamp): a NaN stays NaN. So a token of an fp16 model with a value past 65504 (inf
//   in fp16) has an inf scale and comes out NaN entirely (inf / inf, then 0 * inf), as in the library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/format/quant_scheme.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// Where the arguments apply: a Linear's input/output activations, or the kv cache (kv_cache_scheme).
enum class ActivationSite { kLinear, kKvCache };

// One activation tensor's fake quantization. Immutable after construction; Apply is thread-safe (callers
// split rows across threads: every supported scheme treats rows independently).
class ActivationQuantizer {
 public:
  enum class Kind { kInt, kFp8, kNvFp4 };

  // OK when llmc can evaluate `args` at `site`; otherwise InvalidArgument/Unimplemented naming `where` (e.g.
  // "config.json: quantization_config.config_groups.group_0.input_activations") and what is supported.
  static absl::Status Check(const QuantArgs& args, ActivationSite site, absl::string_view where);

  // A quantizer for rows of `cols` values of a model of dtype `dtype` (BF16, F16 or F32). Fails as Check does,
  // and when a group size does not divide `cols`. Static schemes need SetStaticScale, NVFP4 SetGlobalScale.
  static absl::StatusOr<ActivationQuantizer> Create(const QuantArgs& args, ActivationSite site, DType dtype,
                                                    int64_t cols, absl::string_view where);

  // The stored static scale(s): one value (per tensor), or one per block of `cols / scales.size()` columns (per
  // head). Fails naming the quantizer when the count does not fit, a scale is not finite and positive, or the
  // scheme is dynamic.
  absl::Status SetStaticScale(std::vector<float> scales);
  // The fp32 global scale of NVFP4 (`input_global_scale`). Fails unless finite and positive.
  absl::Status SetGlobalScale(float global_scale);

  bool dynamic() const { return dynamic_; }
  Kind kind() const { return kind_; }
  DType dtype() const { return dtype_; }
  int64_t cols() const { return cols_; }
  // Columns that share one dynamic scale within a row (cols for per token, the group size otherwise), or per
  // static scale.
  int64_t group_cols() const { return group_cols_; }
  int num_bits() const { return num_bits_; }
  float qmin() const { return qmin_; }
  float qmax() const { return qmax_; }
  float global_scale() const { return global_; }
  const std::vector<float>& static_scales() const { return static_scale_; }
  const std::string& where() const { return where_; }

  // Quantize-dequantizes x [rows, cols] (row-major fp32) in place. Rows are independent.
  void Apply(float* x, int64_t rows) const;

  // The pieces of Apply, for tests and other backends' references.
  // The dynamic scale of a group whose values (already in the model dtype) have range [mn, mx] (mn <= 0 <= mx).
  float DynamicScale(float mn, float mx) const;
  // Quantize-dequantize one value (already in the model dtype) with `scale` (for NVFP4 the fp8 group scale).
  float FakeQuant(float x, float scale) const;

 private:
  ActivationQuantizer() = default;
  std::string where_;
  Kind kind_ = Kind::kInt;
  DType dtype_ = DType::kBF16;
  bool dynamic_ = true;
  int num_bits_ = 8;
  float qmin_ = 0, qmax_ = 0;
  int64_t cols_ = 0;
  int64_t group_cols_ = 0;
  float global_ = 0;
  std::vector<float> static_scale_;
};

}  // namespace llmc
