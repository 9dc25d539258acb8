#include "engine/quant/activation_quantizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/quant/model_dtype_math.h"

namespace llmc {
namespace {

constexpr float kF8ScaleEps = 0.125f;  // torch.finfo(torch.float8_e4m3fn).eps: a zero fp8 scale becomes this



const char* kSupported =
    "supported: int or fp8 symmetric with dynamic per-token or per-group scales or a static per-tensor scale, and "
    "NVFP4 (fp4, tensor_group, dynamic local, group_size 16, fp8 e4m3 scales); kv cache: static per-tensor or "
    "per-head int/fp8 scales";

}  // namespace

absl::Status ActivationQuantizer::Check(const QuantArgs& a, ActivationSite site, absl::string_view where) {
  auto refuse = [&](absl::string_view what) {
    return absl::UnimplementedError(
        absl::StrCat(where, ": ", what, " cannot be evaluated by llmc (", kSupported,
                     "); evaluate the weights only (llmc eval --activations weights-only) or change the scheme"));
  };
  const bool fp4 = a.type == QuantType::kFloat && a.num_bits == 4;
  const bool fp8 = a.type == QuantType::kFloat && a.num_bits == 8;
  const bool integer = a.type == QuantType::kInt;
  if (!a.symmetric) return refuse("asymmetric activation quantization (symmetric: false)");
  if (a.is_mx()) return refuse("MX activation quantization (e8m0 scales, scale_dtype torch.uint8)");
  if (!fp4 && !fp8 && !integer) return refuse(absl::StrCat("float activations of ", a.num_bits, " bits"));
  if (integer && (a.num_bits < 2 || a.num_bits > 8))
    return refuse(absl::StrCat("int activations of ", a.num_bits, " bits"));
  if (a.actorder) return refuse("actorder on activations");
  const std::string strategy(StrategyName(a.strategy));
  if (site == ActivationSite::kKvCache) {
    if (fp4) return refuse("an fp4 kv cache");
    if (a.is_dynamic())
      return refuse(absl::StrCat("a dynamic kv cache (dynamic: ", a.dynamic, ", strategy ", strategy, ")"));
    if (a.strategy != Strategy::kTensor && a.strategy != Strategy::kAttnHead)
      return refuse(absl::StrCat("a static kv cache with strategy ", strategy));
    if (a.scale_dtype) return refuse(absl::StrCat("a kv cache with scale_dtype ", *a.scale_dtype));
    return absl::OkStatus();
  }
  if (fp4) {
    if (a.strategy != Strategy::kTensorGroup || a.dynamic != "local" || a.group_size.value_or(0) != 16 ||
        a.scale_dtype.value_or("") != "torch.float8_e4m3fn")
      return refuse(absl::StrCat("fp4 activations other than NVFP4 (strategy ", strategy, ", dynamic ", a.dynamic,
                                 ", group_size ", a.group_size ? absl::StrCat(*a.group_size) : "null", ")"));
    return absl::OkStatus();
  }
  if (a.scale_dtype) return refuse(absl::StrCat("activation scale_dtype ", *a.scale_dtype));
  if (a.dynamic == "true") {
    if (a.strategy == Strategy::kToken) return absl::OkStatus();
    if (a.strategy == Strategy::kGroup && a.group_size.value_or(0) > 0) return absl::OkStatus();
    if (a.strategy == Strategy::kTensor)
      return refuse(
          "dynamic per-tensor activation scales (the reader computes them over the whole batch it runs, so the "
          "figure depends on its batch size)");
    return refuse(absl::StrCat("dynamic activation scales with strategy ", strategy));
  }
  if (a.dynamic == "false") {
    if (a.strategy == Strategy::kTensor) return absl::OkStatus();
    return refuse(absl::StrCat("static activation scales with strategy ", strategy));
  }
  return refuse(absl::StrCat("dynamic: ", a.dynamic, " with strategy ", strategy));
}

absl::StatusOr<ActivationQuantizer> ActivationQuantizer::Create(const QuantArgs& args, ActivationSite site,
                                                                DType dtype, int64_t cols, absl::string_view where) {
  if (auto s = Check(args, site, where); !s.ok()) return s;
  if (dtype != DType::kBF16 && dtype != DType::kF16 && dtype != DType::kF32)
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": model dtype ", DTypeName(dtype), " is not bf16, f16 or f32"));
  if (cols <= 0) return absl::InvalidArgumentError(absl::StrCat(where, ": no columns to quantize"));
  ActivationQuantizer q;
  q.where_ = std::string(where);
  q.dtype_ = dtype;
  q.num_bits_ = args.num_bits;
  q.cols_ = cols;
  q.dynamic_ = args.is_dynamic();
  if (args.type == QuantType::kInt) {
    q.kind_ = Kind::kInt;
    q.qmax_ = static_cast<float>((1 << (args.num_bits - 1)) - 1);
    q.qmin_ = -static_cast<float>(1 << (args.num_bits - 1));
  } else if (args.num_bits == 8) {
    q.kind_ = Kind::kFp8;
    q.qmax_ = kF8E4M3Max;
    q.qmin_ = -kF8E4M3Max;
  } else {
    q.kind_ = Kind::kNvFp4;
    q.qmax_ = kFP4Max;
    q.qmin_ = -kFP4Max;
  }
  q.group_cols_ = cols;
  if (args.strategy == Strategy::kGroup || args.strategy == Strategy::kTensorGroup) {
    q.group_cols_ = *args.group_size;
    if (cols % q.group_cols_ != 0)
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", cols, " columns are not divisible by group_size ",
                                                     q.group_cols_, "; the library refuses this shape too"));
  }
  return q;
}

absl::Status ActivationQuantizer::SetStaticScale(std::vector<float> scales) {
  if (dynamic_)
    return absl::InvalidArgumentError(absl::StrCat(where_, ": the scheme is dynamic; it has no static scale"));
  if (scales.empty() || cols_ % static_cast<int64_t>(scales.size()) != 0)
    return absl::InvalidArgumentError(absl::StrCat(where_, ": ", scales.size(), " static scales do not divide ",
                                                   cols_, " columns (expected one, or one per head)"));
  for (float s : scales)
    if (!(s > 0.0f) || !std::isfinite(s))
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": static scale ", s, " is not finite and positive; the checkpoint is damaged"));
  group_cols_ = cols_ / static_cast<int64_t>(scales.size());
  static_scale_ = std::move(scales);
  return absl::OkStatus();
}

absl::Status ActivationQuantizer::SetGlobalScale(float global_scale) {
  if (!(global_scale > 0.0f) || !std::isfinite(global_scale))
    return absl::InvalidArgumentError(
        absl::StrCat(where_, ": global scale ", global_scale, " is not finite and positive; the checkpoint is damaged"));
  global_ = global_scale;
  return absl::OkStatus();
}

float ActivationQuantizer::DynamicScale(float mn, float mx) const {
  const float amax = std::max(-mn, mx);
  switch (kind_) {
    case Kind::kInt: {
      float s = RoundTo(dtype_, amax / ((qmax_ - qmin_) / 2.0f));
      return s == 0.0f ? DTypeEps(dtype_) : s;
    }
    case Kind::kFp8: {
      float s = RoundTo(dtype_, amax / kF8E4M3Max);
      return s == 0.0f ? DTypeEps(dtype_) : s;
    }
    case Kind::kNvFp4: {
      float local = std::clamp(global_ * RoundTo(dtype_, amax / kFP4Max), -kF8E4M3Max, kF8E4M3Max);
      float s = F8E4M3ToFloat(FloatToF8E4M3Clamped(local));
      return s == 0.0f ? kF8ScaleEps : s;
    }
  }
  return 1.0f;
}

float ActivationQuantizer::FakeQuant(float x, float scale) const {
  switch (kind_) {
    case Kind::kInt: {
      // torch.round keeps the sign of a value that rounds to zero (-0.5 -> -0), as rintf does on the GPU.
      const float v = std::clamp(RoundTo(dtype_, x / scale), qmin_, qmax_);
      const float q = std::copysign(RoundHalfEvenSmall(v), v);
      return RoundTo(dtype_, q * scale);
    }
    case Kind::kFp8: {
      float q = F8E4M3ToFloat(FloatToF8E4M3Clamped(std::clamp(RoundTo(dtype_, x / scale), qmin_, qmax_)));
      return RoundTo(dtype_, q * scale);
    }
    case Kind::kNvFp4: {
      // The fp32 quotient goes to the fp4 cast as it is: compressed-tensors 0.18 casts with its eager
      // cast_to_fp4 on every device (its Triton cast, which would round to bf16 first, is registered "disable").
      const float e = scale / global_;
      float q = FP4ToFloat(FloatToFP4(std::clamp(x / e, qmin_, qmax_)));
      return RoundTo(dtype_, q * e);
    }
  }
  return x;
}

void ActivationQuantizer::Apply(float* x, int64_t rows) const {
  const int64_t groups = cols_ / group_cols_;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols_;
    for (int64_t c = 0; c < cols_; ++c) row[c] = RoundTo(dtype_, row[c]);
    for (int64_t g = 0; g < groups; ++g) {
      float* v = row + g * group_cols_;
      float scale;
      if (dynamic_) {
        float mn = 0.0f, mx = 0.0f;
        for (int64_t c = 0; c < group_cols_; ++c) {
          mn = std::min(mn, v[c]);
          mx = std::max(mx, v[c]);
        }
        scale = DynamicScale(mn, mx);
      } else {
        scale = static_scale_.size() == 1 ? static_scale_[0] : static_scale_[g];
      }
      for (int64_t c = 0; c < group_cols_; ++c) v[c] = FakeQuant(v[c], scale);
    }
  }
}

}  // namespace llmc
