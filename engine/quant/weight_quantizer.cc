#include "engine/quant/weight_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/quant/mse_grid.h"
#include "engine/quant/simd_kernels.h"

namespace llmc {

uint64_t OutputTensor::nbytes() const {
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Arithmetic "in the model dtype": load an element, round a result to the dtype, store a scale.
template <DType D>
struct Num;
template <>
struct Num<DType::kBF16> {
  static float Load(const uint8_t* p, int64_t i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return BF16ToFloat(h);
  }
  static float R(float x) { return RoundBF16Finite(x); }
  static void Store(float x, uint8_t* p, int64_t i) {
    uint16_t h = FloatToBF16(x);
    std::memcpy(p + 2 * i, &h, 2);
  }
  static constexpr float kEps = 0.0078125f;  // torch.finfo(torch.bfloat16).eps
};
template <>
struct Num<DType::kF16> {
  static float Load(const uint8_t* p, int64_t i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return F16ToFloat(h);
  }
  static float R(float x) { return RoundF16(x); }
  static void Store(float x, uint8_t* p, int64_t i) {
    uint16_t h = FloatToF16(x);
    std::memcpy(p + 2 * i, &h, 2);
  }
  static constexpr float kEps = 0.0009765625f;
};
template <>
struct Num<DType::kF32> {
  static float Load(const uint8_t* p, int64_t i) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  static float R(float x) { return x; }
  static void Store(float x, uint8_t* p, int64_t i) { std::memcpy(p + 4 * i, &x, 4); }
  static constexpr float kEps = 1.1920928955078125e-07f;
};

constexpr float kF8Eps = 0.125f;  // torch.finfo(torch.float8_e4m3fn).eps

bool IsMse(const QuantArgs& a) { return IsMseSearch(a); }

// Layout of the scale grid of a weight under `args`.
struct Grid {
  int64_t group_cols = 0;  // columns per scale (group, channel=cols, tensor=cols)
  int64_t group_rows = 1;  // rows per scale (block strategy; tensor = rows)
  int64_t scale_rows = 0;
  int64_t scale_cols = 0;
};

absl::StatusOr<Grid> MakeGrid(absl::string_view module, int64_t rows, int64_t cols, const QuantArgs& a) {
  Grid g;
  auto not_divisible = [&](absl::string_view what, int64_t dim, int64_t size) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": ", what, " ", dim, " is not divisible by ", a.strategy == Strategy::kBlock ? "block size " : "group_size ",
        size, "; use a ", a.strategy == Strategy::kBlock ? "block" : "group", " size that divides it or add the module to ignore"));
  };
  switch (a.strategy) {
    case Strategy::kGroup:
    case Strategy::kTensorGroup: {
      int64_t gs = *a.group_size;
      if (cols % gs != 0) return not_divisible("in_features", cols, gs);
      g.group_cols = gs;
      g.scale_rows = rows;
      g.scale_cols = cols / gs;
      break;
    }
    case Strategy::kChannel:
      g.group_cols = cols;
      g.scale_rows = rows;
      g.scale_cols = 1;
      break;
    case Strategy::kTensor:
      g.group_cols = cols;
      g.group_rows = rows;
      g.scale_rows = 1;
      g.scale_cols = 1;
      break;
    case Strategy::kBlock: {
      int64_t br = (*a.block_structure)[0], bc = (*a.block_structure)[1];
      g.group_rows = br;
      g.group_cols = bc;
      g.scale_rows = CeilDiv(rows, br);
      g.scale_cols = CeilDiv(cols, bc);
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(module, ": weight strategy ", StrategyName(a.strategy), " is not supported for weights"));
  }
  return g;
}

}  // namespace

absl::StatusOr<std::vector<OutputTensor>> PlanQuantizedWeight(absl::string_view module, int64_t rows, int64_t cols,
                                                              DType dtype, const QuantArgs& a,
                                                              const std::string& format) {
  if (dtype != DType::kBF16 && dtype != DType::kF16 && dtype != DType::kF32)
    return absl::InvalidArgumentError(absl::StrCat(module, ": weight dtype ", DTypeName(dtype),
                                                   " cannot be quantized (expected BF16, F16 or F32; is the model already quantized?)"));
  if (rows <= 0 || cols <= 0) return absl::InvalidArgumentError(absl::StrCat(module, ": weight has an empty shape"));
  LLMC_ASSIGN_OR_RETURN(Grid g, MakeGrid(module, rows, cols, a));
  if (a.strategy == Strategy::kBlock && (a.type != QuantType::kFloat || a.num_bits != 8))
    return absl::InvalidArgumentError(absl::StrCat(module, ": strategy block is supported for fp8 weights only; ",
                                                   "use group or channel for integer weights"));
  std::vector<int64_t> scale_shape = {g.scale_rows, g.scale_cols};
  if (a.strategy == Strategy::kTensor) scale_shape = {1};
  std::vector<OutputTensor> out;
  auto unsupported = [&]() {
    return absl::InvalidArgumentError(absl::StrCat(module, ": format ", format, " cannot store ", a.num_bits, "-bit ",
                                                   a.type == QuantType::kInt ? "int" : "float", " weights with strategy ",
                                                   StrategyName(a.strategy)));
  };
  if (format == "pack-quantized") {
    if (a.type != QuantType::kInt) return unsupported();
    int pf = 32 / a.num_bits;
    out.push_back({"weight_packed", DType::kI32, {rows, CeilDiv(cols, pf)}});
    out.push_back({"weight_scale", dtype, scale_shape});
    out.push_back({"weight_shape", DType::kI64, {2}});
    if (!a.symmetric) {
      if (a.strategy != Strategy::kGroup && a.strategy != Strategy::kChannel) return unsupported();
      out.push_back({"weight_zero_point", DType::kI32, {CeilDiv(g.scale_rows, pf), g.scale_cols}});
    }
  } else if (format == "int-quantized" || (format == "naive-quantized" && a.type == QuantType::kInt)) {
    if (a.type != QuantType::kInt) return unsupported();
    out.push_back({"weight", DType::kI8, {rows, cols}});
    out.push_back({"weight_scale", dtype, scale_shape});
    if (!a.symmetric) out.push_back({"weight_zero_point", DType::kI8, scale_shape});
  } else if (format == "float-quantized" || format == "naive-quantized") {
    if (a.type != QuantType::kFloat || a.num_bits != 8 || a.is_mx()) return unsupported();
    out.push_back({"weight", DType::kF8E4M3, {rows, cols}});
    out.push_back({"weight_scale", dtype, scale_shape});
  } else if (format == "nvfp4-pack-quantized") {
    if (!a.is_fp4() || a.strategy != Strategy::kTensorGroup) return unsupported();
    if (cols % 2) return absl::InvalidArgumentError(absl::StrCat(module, ": in_features ", cols, " must be even for fp4 packing"));
    out.push_back({"weight_packed", DType::kU8, {rows, cols / 2}});
    out.push_back({"weight_scale", DType::kF8E4M3, {rows, g.scale_cols}});
    out.push_back({"weight_global_scale", DType::kF32, {1}});
  } else if (format == "mxfp4-pack-quantized") {
    if (!a.is_fp4() || !a.is_mx()) return unsupported();
    out.push_back({"weight_packed", DType::kU8, {rows, cols / 2}});
    out.push_back({"weight_scale", DType::kU8, {rows, g.scale_cols}});
  } else if (format == "mxfp8-quantized") {
    if (a.type != QuantType::kFloat || a.num_bits != 8 || !a.is_mx()) return unsupported();
    out.push_back({"weight", DType::kF8E4M3, {rows, cols}});
    out.push_back({"weight_scale", DType::kU8, {rows, g.scale_cols}});
  } else {
    return absl::InvalidArgumentError(absl::StrCat(module, ": unknown compression format '", format, "'"));
  }
  return out;
}

namespace {
template <DType D>
bool AbsMaxT(const uint8_t* p, int64_t n, float* out) {
  if constexpr (D == DType::kBF16) {
    if (n > 0 && n <= (int64_t{1} << 40)) return simd::GroupAbsMaxBF16(reinterpret_cast<const uint16_t*>(p), n, n, out);
  }
  float amax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    float x = Num<D>::Load(p, i);
    finite &= std::fabs(x) <= 3.4028235e38f;  // false for NaN and Inf
    amax = std::max(amax, std::fabs(x));
  }
  *out = amax;
  return finite;
}
}  // namespace

absl::StatusOr<float> WeightAbsMax(const WeightView& w) {
  const auto* p = static_cast<const uint8_t*>(w.data);
  int64_t n = w.rows * w.cols;
  float amax = 0.0f;
  bool finite;
  switch (w.dtype) {
    case DType::kBF16: finite = AbsMaxT<DType::kBF16>(p, n, &amax); break;
    case DType::kF16: finite = AbsMaxT<DType::kF16>(p, n, &amax); break;
    case DType::kF32: finite = AbsMaxT<DType::kF32>(p, n, &amax); break;
    default: return absl::InvalidArgumentError(absl::StrCat(w.module, ": unsupported weight dtype"));
  }
  if (!finite)
    return absl::InvalidArgumentError(absl::StrCat(w.module, ": weight contains NaN or Inf; fix the checkpoint or add the module to ignore"));
  return amax;
}

float NvFp4GlobalScale(float amax, DType dtype) {
  // The library computes `448.0 * 6.0 / amax` with amax a tensor of the weight dtype (clamped to the smallest
  // normal float); torch evaluates python_float / tensor as reciprocal(tensor) * python_float: two roundings.
  auto r = [dtype](float x) { return dtype == DType::kBF16 ? RoundBF16(x) : dtype == DType::kF16 ? RoundF16(x) : x; };
  float a = std::max(amax, 1.17549435e-38f);
  return r(r(1.0f / a) * 2688.0f);
}

namespace {

// E8M0 exponent for an MX group with max |x| = amax (fp4: emax 2; fp8 e4m3: emax 8), as compressed-tensors'
// mxfp_utils: round amax up to a power of two by its mantissa, then subtract the element format's emax.
uint8_t MxExponent(float amax, int elem_emax) {
  uint32_t bits = FloatBits(amax);
  bits = (bits + 0x200000u) & 0xff800000u;  // round the mantissa to the nearest power of two (ties up)
  int e = static_cast<int>((bits >> 23) & 0xff);
  if (e == 0) return 0;          // p == 0 (amax 0 or subnormal): log2 = -inf, clamped to 0
  int biased = e - elem_emax;  // 127 + log2(p) - emax
  return static_cast<uint8_t>(std::clamp(biased, 0, 255));
}

template <DType D>
class Impl {
  using N = Num<D>;

 public:
  Impl(const WeightView& w, const QuantArgs& a, const std::string& format, const Grid& g)
      : w_(w), a_(a), format_(format), g_(g), p_(static_cast<const uint8_t*>(w.data)) {
    qmax_ = static_cast<float>((1 << (a.num_bits - 1)) - 1);
    qmin_ = -static_cast<float>(1 << (a.num_bits - 1));
  }

  absl::Status Run(std::vector<std::vector<uint8_t>>& out, std::optional<float> global_scale) {
    if (format_ == "pack-quantized" || format_ == "int-quantized" ||
        (format_ == "naive-quantized" && a_.type == QuantType::kInt))
      return RunInt(out);
    if (format_ == "float-quantized" || format_ == "naive-quantized") return RunFp8(out);
    if (format_ == "nvfp4-pack-quantized") return RunNvFp4(out, global_scale);
    if (format_ == "mxfp4-pack-quantized" || format_ == "mxfp8-quantized") return RunMx(out);
    return absl::InternalError("unhandled format " + format_);
  }

 private:
  absl::Status NonFinite() const {
    return absl::InvalidArgumentError(
        absl::StrCat(w_.module, ": weight contains NaN or Inf; fix the checkpoint or add the module to ignore"));
  }

  // Observed range of the group of rows [r0, r1) x cols [c0, c1), widened to include 0.
  absl::Status Range(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* mn, float* mx) const {
    if constexpr (D == DType::kBF16) {
      if (r1 == r0 + 1) {
        if (!simd::RangeBF16(reinterpret_cast<const uint16_t*>(p_) + r0 * w_.cols + c0, c1 - c0, mn, mx)) return NonFinite();
        return absl::OkStatus();
      }
    }
    float lo = 0.0f, hi = 0.0f;
    bool finite = true;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * w_.cols;
      for (int64_t c = c0; c < c1; ++c) {
        float x = N::Load(p_, base + c);
        finite &= std::isfinite(x);
        lo = std::min(lo, x);
        hi = std::max(hi, x);
      }
    }
    if (!finite) return NonFinite();
    *mn = lo;
    *mx = hi;
    return absl::OkStatus();
  }

  // ---- integer ----
  struct IntParams {
    float scale;
    float zp;
  };
  IntParams IntQParams(float mn, float mx) const {
    IntParams q{0.0f, 0.0f};
    if (a_.symmetric) {
      float amax = std::max(-mn, mx);
      q.scale = N::R(amax / ((qmax_ - qmin_) / 2.0f));
    } else {
      q.scale = N::R(N::R(mx - mn) / (qmax_ - qmin_));
    }
    if (q.scale == 0.0f) q.scale = N::kEps;
    if (!a_.symmetric) q.zp = std::nearbyint(std::clamp(N::R(qmin_ - N::R(mn / q.scale)), qmin_, qmax_));
    return q;
  }
  float IntQ(float x, const IntParams& q) const {
    float s = N::R(x / q.scale);
    if (!a_.symmetric) s = N::R(s + q.zp);
    return RoundHalfEvenSmall(std::clamp(s, qmin_, qmax_));
  }
  float IntDq(float x, const IntParams& q) const { return N::R(N::R(IntQ(x, q) - q.zp) * q.scale); }

  // ---- fp8 ----
  float Fp8Scale(float mn, float mx) const {
    float s = N::R(std::max(-mn, mx) / kF8E4M3Max);
    return s == 0.0f ? N::kEps : s;
  }
  uint8_t Fp8Q(float x, float scale) const {
    return FloatToF8E4M3Clamped(std::clamp(N::R(x / scale), -kF8E4M3Max, kF8E4M3Max));
  }

  // The mse / imatrix_mse search (mse_grid.h): shrink the range by p = 1 - i/grid and keep the lowest sum
  // importance_c |err|^norm (importance 1 for mse).
  template <class MakeParams, class Dq>
  void MseSearch(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* mn, float* mx, MakeParams make, Dq dq) const {
    const MseGrid mg = MseGridOf(a_);
    const float grid = static_cast<float>(mg.grid);
    const float* imp = w_.importance;
    float best = INFINITY, bmn = *mn, bmx = *mx;
    for (int64_t i = 0; i < mg.steps; ++i) {
      float p = 1.0f - i / grid;
      float cmn = N::R(p * *mn), cmx = N::R(p * *mx);
      auto params = make(cmn, cmx);
      double err = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          float x = N::Load(p_, r * w_.cols + c);
          const double e = std::pow(std::fabs(static_cast<double>(dq(x, params)) - x), mg.norm);
          err += imp != nullptr ? imp[c] * e : e;
        }
      if (err < best) {
        best = static_cast<float>(err);
        bmn = cmn;
        bmx = cmx;
      }
    }
    *mn = bmn;
    *mx = bmx;
  }

  absl::Status RunInt(std::vector<std::vector<uint8_t>>& out) {
    const bool packed = format_ == "pack-quantized";
    const int64_t R = w_.rows, C = w_.cols;
    uint8_t* scale_out = out[1].data();
    std::vector<int8_t> zps(a_.symmetric ? 0 : g_.scale_rows * g_.scale_cols);
    std::vector<int8_t> qrow(C);
    const int bits = a_.num_bits;
    const int pf = 32 / bits;
    const int64_t words = CeilDiv(C, pf);
    std::vector<IntParams> params(g_.scale_cols);
    auto observe = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) -> absl::StatusOr<IntParams> {
      float mn = 0.0f, mx = 0.0f;
      LLMC_RETURN_IF_ERROR(Range(r0, r1, c0, c1, &mn, &mx));
      if (IsMse(a_))
        MseSearch(r0, r1, c0, c1, &mn, &mx, [&](float a, float b) { return IntQParams(a, b); },
                  [&](float x, const IntParams& q) { return IntDq(x, q); });
      return IntQParams(mn, mx);
    };
    IntParams tensor_params{};
    if (a_.strategy == Strategy::kTensor) {
      LLMC_ASSIGN_OR_RETURN(tensor_params, observe(0, R, 0, C));
      N::Store(tensor_params.scale, scale_out, 0);
      if (!a_.symmetric) zps[0] = static_cast<int8_t>(tensor_params.zp);
    }
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t gi = 0; gi < g_.scale_cols; ++gi) {
        if (a_.strategy == Strategy::kTensor) {
          params[gi] = tensor_params;
          continue;
        }
        int64_t c0 = gi * g_.group_cols, c1 = std::min(C, c0 + g_.group_cols);
        LLMC_ASSIGN_OR_RETURN(params[gi], observe(r, r + 1, c0, c1));
        N::Store(params[gi].scale, scale_out, r * g_.scale_cols + gi);
        if (!a_.symmetric) zps[r * g_.scale_cols + gi] = static_cast<int8_t>(params[gi].zp);
      }
      const int64_t base = r * C;
      for (int64_t gi = 0; gi < g_.scale_cols; ++gi) {
        int64_t c0 = gi * g_.group_cols, c1 = std::min(C, c0 + g_.group_cols);
        const IntParams q = params[gi];
        if constexpr (D == DType::kBF16) {
          simd::QuantIntBF16(reinterpret_cast<const uint16_t*>(p_) + base + c0, c1 - c0, q.scale, q.zp, !a_.symmetric,
                             qmin_, qmax_, qrow.data() + c0);
        } else {
          for (int64_t c = c0; c < c1; ++c) qrow[c] = static_cast<int8_t>(IntQ(N::Load(p_, base + c), q));
        }
      }
      if (packed) {
        const uint32_t offset = 1u << (bits - 1);
        const uint32_t mask = (1u << bits) - 1;
        (void)offset;
        (void)mask;
        simd::PackRow(qrow.data(), C, bits, reinterpret_cast<uint32_t*>(out[0].data() + r * words * 4));
      } else {
        std::memcpy(out[0].data() + base, qrow.data(), C);
      }
    }
    if (packed) {
      // weight_shape [rows, cols] int64
      int64_t shape[2] = {R, C};
      std::memcpy(out[2].data(), shape, 16);
      if (!a_.symmetric) {
        auto zp = PackInt32(zps.data(), g_.scale_rows, g_.scale_cols, bits, 0);
        std::memcpy(out[3].data(), zp.data(), zp.size() * 4);
      }
    } else if (!a_.symmetric) {
      std::memcpy(out[2].data(), zps.data(), zps.size());
    }
    return absl::OkStatus();
  }

  absl::Status RunFp8(std::vector<std::vector<uint8_t>>& out) {
    const int64_t R = w_.rows, C = w_.cols;
    uint8_t* q = out[0].data();
    uint8_t* scale_out = out[1].data();
    auto fp8_dq = [&](float x, float s) { return N::R(F8E4M3ToFloat(Fp8Q(x, s)) * s); };
    auto observe = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) -> absl::StatusOr<float> {
      float mn = 0.0f, mx = 0.0f;
      LLMC_RETURN_IF_ERROR(Range(r0, r1, c0, c1, &mn, &mx));
      if (IsMse(a_)) MseSearch(r0, r1, c0, c1, &mn, &mx, [&](float a, float b) { return Fp8Scale(a, b); }, fp8_dq);
      return Fp8Scale(mn, mx);
    };
    // Blocks of group_rows x group_cols (channel: 1 x C, tensor: R x C).
    for (int64_t br = 0; br < g_.scale_rows; ++br) {
      int64_t r0 = br * g_.group_rows, r1 = std::min(R, r0 + g_.group_rows);
      for (int64_t bc = 0; bc < g_.scale_cols; ++bc) {
        int64_t c0 = bc * g_.group_cols, c1 = std::min(C, c0 + g_.group_cols);
        LLMC_ASSIGN_OR_RETURN(float s, observe(r0, r1, c0, c1));
        N::Store(s, scale_out, br * g_.scale_cols + bc);
        for (int64_t r = r0; r < r1; ++r) {
          if constexpr (D == DType::kBF16) {
            simd::QuantFp8BF16(reinterpret_cast<const uint16_t*>(p_) + r * C + c0, c1 - c0, s, q + r * C + c0);
          } else {
            for (int64_t c = c0; c < c1; ++c) q[r * C + c] = Fp8Q(N::Load(p_, r * C + c), s);
          }
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status RunNvFp4(std::vector<std::vector<uint8_t>>& out, std::optional<float> global_scale) {
    const int64_t R = w_.rows, C = w_.cols, gs = g_.group_cols;
    float g;
    if (global_scale) {
      g = *global_scale;
    } else {
      LLMC_ASSIGN_OR_RETURN(float amax, WeightAbsMax(w_));
      g = NvFp4GlobalScale(amax, D);
    }
    if (IsMse(a_))
      return absl::InvalidArgumentError(absl::StrCat(w_.module, ": the mse observer is not supported for NVFP4 weights; use minmax"));
    uint8_t* packed = out[0].data();
    uint8_t* scales = out[1].data();
    std::memcpy(out[2].data(), &g, 4);
    std::vector<float> amax(g_.scale_cols), div(g_.scale_cols);
    for (int64_t r = 0; r < R; ++r) {
      LLMC_RETURN_IF_ERROR(RowGroupAbsMax(r, gs, amax.data()));
      for (int64_t gi = 0; gi < g_.scale_cols; ++gi) {
        // local scale = fp8(clamp(global * (amax / 6)))  (amax / 6 in the weight dtype, product in fp32)
        float local = std::clamp(g * N::R(amax[gi] / kFP4Max), -kF8E4M3Max, kF8E4M3Max);
        uint8_t s8 = std::isfinite(local) ? FloatToF8E4M3Clamped(local) : FloatToF8E4M3(local);
        float sf = F8E4M3ToFloat(s8);
        if (sf == 0.0f) {
          s8 = FloatToF8E4M3(kF8Eps);
          sf = kF8Eps;
        }
        scales[r * g_.scale_cols + gi] = s8;
        div[gi] = sf / g;  // fp32; the division w / div stays in fp32
      }
      QuantFp4Row(r, gs, div.data(), /*round_to_dtype=*/false, packed + r * (C / 2));
    }
    return absl::OkStatus();
  }

  absl::Status RunMx(std::vector<std::vector<uint8_t>>& out) {
    const bool fp4 = a_.is_fp4();
    const int64_t R = w_.rows, C = w_.cols, gs = g_.group_cols;
    if (IsMse(a_))
      return absl::InvalidArgumentError(absl::StrCat(w_.module, ": the mse observer is not supported for MX formats; use minmax"));
    uint8_t* q = out[0].data();
    uint8_t* scales = out[1].data();
    std::vector<float> amax(g_.scale_cols), div(g_.scale_cols);
    for (int64_t r = 0; r < R; ++r) {
      LLMC_RETURN_IF_ERROR(RowGroupAbsMax(r, gs, amax.data()));
      for (int64_t gi = 0; gi < g_.scale_cols; ++gi) {
        uint8_t e = MxExponent(amax[gi], fp4 ? 2 : 8);
        scales[r * g_.scale_cols + gi] = e;
        div[gi] = N::R(E8M0ToFloat(e));
      }
      if (fp4) {
        QuantFp4Row(r, gs, div.data(), /*round_to_dtype=*/true, q + r * (C / 2));
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        float x = N::R(N::Load(p_, r * C + c) / div[c / gs]);
        q[r * C + c] = FloatToF8E4M3Clamped(std::clamp(x, -kF8E4M3Max, kF8E4M3Max));
      }
    }
    return absl::OkStatus();
  }

  // max |w| of each group of `gs` columns of row r; fails on NaN or Inf.
  absl::Status RowGroupAbsMax(int64_t r, int64_t gs, float* amax) const {
    const int64_t C = w_.cols;
    if constexpr (D == DType::kBF16) {
      if (!simd::GroupAbsMaxBF16(reinterpret_cast<const uint16_t*>(p_) + r * C, C, gs, amax)) return NonFinite();
      return absl::OkStatus();
    }
    for (int64_t gi = 0; gi < C / gs; ++gi) {
      float mn = 0.0f, mx = 0.0f;
      LLMC_RETURN_IF_ERROR(Range(r, r + 1, gi * gs, gi * gs + gs, &mn, &mx));
      amax[gi] = std::max(-mn, mx);
    }
    return absl::OkStatus();
  }

  // fp4 codes of row r: clamp(w / div[group], +-6) (rounded to the weight dtype first when round_to_dtype),
  // two per byte, element 2j in the low nibble.
  void QuantFp4Row(int64_t r, int64_t gs, const float* div, bool round_to_dtype, uint8_t* packed) const {
    const int64_t C = w_.cols;
    if constexpr (D == DType::kBF16) {
      simd::QuantFp4RowBF16(reinterpret_cast<const uint16_t*>(p_) + r * C, C, gs, div, round_to_dtype, packed);
      return;
    }
    for (int64_t c = 0; c < C; c += 2) {
      uint8_t code[2];
      for (int k = 0; k < 2; ++k) {
        float y = N::Load(p_, r * C + c + k) / div[(c + k) / gs];
        if (round_to_dtype) y = N::R(y);
        code[k] = FloatToFP4(std::clamp(y, -kFP4Max, kFP4Max));
      }
      packed[c / 2] = static_cast<uint8_t>(code[0] | (code[1] << 4));
    }
  }

  const WeightView& w_;
  const QuantArgs& a_;
  const std::string& format_;
  const Grid g_;
  const uint8_t* p_;
  float qmin_, qmax_;
};

}  // namespace

absl::StatusOr<std::vector<std::vector<uint8_t>>> QuantizeWeight(const WeightView& w, const QuantArgs& args,
                                                                 const std::string& format,
                                                                 std::optional<float> global_scale) {
  LLMC_RETURN_IF_ERROR(args.Validate(w.module));
  if (IsImatrixObserver(args) && w.importance == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(
        w.module, ": the imatrix_mse observer needs the activation statistics of a calibrated job (give --dataset)"));
  LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight(w.module, w.rows, w.cols, w.dtype, args, format));
  LLMC_ASSIGN_OR_RETURN(Grid g, MakeGrid(w.module, w.rows, w.cols, args));
  std::vector<std::vector<uint8_t>> out;
  for (const auto& t : plan) out.emplace_back(t.nbytes(), 0);
  absl::Status s;
  switch (w.dtype) {
    case DType::kBF16: s = Impl<DType::kBF16>(w, args, format, g).Run(out, global_scale); break;
    case DType::kF16: s = Impl<DType::kF16>(w, args, format, g).Run(out, global_scale); break;
    case DType::kF32: s = Impl<DType::kF32>(w, args, format, g).Run(out, global_scale); break;
    default: return absl::InvalidArgumentError(absl::StrCat(w.module, ": unsupported weight dtype"));
  }
  if (!s.ok()) return s;
  return out;
}

std::vector<int32_t> PackInt32(const int8_t* q, int64_t rows, int64_t cols, int num_bits, int dim) {
  const int pf = 32 / num_bits;
  const uint32_t offset = 1u << (num_bits - 1), mask = (1u << num_bits) - 1;
  auto at = [&](int64_t r, int64_t c) { return (static_cast<uint32_t>(q[r * cols + c] + static_cast<int32_t>(offset))) & mask; };
  if (dim == 1) {
    int64_t words = CeilDiv(cols, pf);
    std::vector<int32_t> out(rows * words, 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[r * words + c / pf] = static_cast<int32_t>(static_cast<uint32_t>(out[r * words + c / pf]) | (at(r, c) << ((c % pf) * num_bits)));
    return out;
  }
  int64_t prow = CeilDiv(rows, pf);
  std::vector<int32_t> out(prow * cols, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[(r / pf) * cols + c] = static_cast<int32_t>(static_cast<uint32_t>(out[(r / pf) * cols + c]) | (at(r, c) << ((r % pf) * num_bits)));
  return out;
}

std::vector<int8_t> UnpackInt32(const int32_t* packed, int64_t rows, int64_t cols, int num_bits, int dim) {
  const int pf = 32 / num_bits;
  const int32_t offset = 1 << (num_bits - 1);
  const uint32_t mask = (1u << num_bits) - 1;
  std::vector<int8_t> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t word, shift;
      if (dim == 1) {
        word = static_cast<uint32_t>(packed[r * CeilDiv(cols, pf) + c / pf]);
        shift = (c % pf) * num_bits;
      } else {
        word = static_cast<uint32_t>(packed[(r / pf) * cols + c]);
        shift = (r % pf) * num_bits;
      }
      out[r * cols + c] = static_cast<int8_t>(static_cast<int32_t>((word >> shift) & mask) - offset);
    }
  return out;
}

absl::StatusOr<std::vector<float>> DequantizeWeight(int64_t rows, int64_t cols, DType dtype, const QuantArgs& a,
                                                    const std::string& format,
                                                    const std::vector<std::vector<uint8_t>>& t,
                                                    const int32_t* g_idx) {
  LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight("weight", rows, cols, dtype, a, format));
  if (t.size() != plan.size()) return absl::InvalidArgumentError("wrong number of tensors to dequantize");
  for (size_t i = 0; i < plan.size(); ++i)
    if (t[i].size() != plan[i].nbytes())
      return absl::InvalidArgumentError(absl::StrCat("tensor ", plan[i].suffix, " has the wrong size"));
  LLMC_ASSIGN_OR_RETURN(Grid g, MakeGrid("weight", rows, cols, a));
  std::vector<float> w(rows * cols);
  if (g_idx) {
    if (a.strategy != Strategy::kGroup && a.strategy != Strategy::kTensorGroup)
      return absl::InvalidArgumentError("g_idx applies to group strategies only");
    for (int64_t i = 0; i < cols; ++i)
      if (g_idx[i] < 0 || g_idx[i] >= g.scale_cols)
        return absl::InvalidArgumentError(absl::StrCat("weight_g_idx[", i, "] = ", g_idx[i], " is outside [0, ", g.scale_cols, ")"));
  }
  auto scale_at = [&](int64_t r, int64_t c) -> int64_t {
    if (a.strategy == Strategy::kTensor) return 0;
    return (r / g.group_rows) * g.scale_cols + (g_idx ? g_idx[c] : c / g.group_cols);
  };
  if (format == "pack-quantized" || format == "int-quantized" ||
      (format == "naive-quantized" && a.type == QuantType::kInt)) {
    std::vector<int8_t> q;
    std::vector<int8_t> zp;
    if (format == "pack-quantized") {
      q = UnpackInt32(reinterpret_cast<const int32_t*>(t[0].data()), rows, cols, a.num_bits, 1);
      if (!a.symmetric)
        zp = UnpackInt32(reinterpret_cast<const int32_t*>(t[3].data()), g.scale_rows, g.scale_cols, a.num_bits, 0);
    } else {
      q.assign(reinterpret_cast<const int8_t*>(t[0].data()), reinterpret_cast<const int8_t*>(t[0].data()) + rows * cols);
      if (!a.symmetric) zp.assign(reinterpret_cast<const int8_t*>(t[2].data()), reinterpret_cast<const int8_t*>(t[2].data()) + t[2].size());
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        int64_t si = scale_at(r, c);
        float s = LoadAsFloat(t[1].data(), dtype, si);
        float z = zp.empty() ? 0.0f : zp[si];
        w[r * cols + c] = (q[r * cols + c] - z) * s;
      }
  } else if (format == "float-quantized" || format == "naive-quantized") {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        w[r * cols + c] = F8E4M3ToFloat(t[0][r * cols + c]) * LoadAsFloat(t[1].data(), dtype, scale_at(r, c));
  } else if (format == "nvfp4-pack-quantized") {
    float gscale;
    std::memcpy(&gscale, t[2].data(), 4);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        uint8_t byte = t[0][r * (cols / 2) + c / 2];
        uint8_t code = (c % 2 == 0) ? (byte & 0xf) : (byte >> 4);
        w[r * cols + c] = FP4ToFloat(code) * (F8E4M3ToFloat(t[1][scale_at(r, c)]) / gscale);
      }
  } else if (format == "mxfp4-pack-quantized" || format == "mxfp8-quantized") {
    bool fp4 = format == "mxfp4-pack-quantized";
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        float v;
        if (fp4) {
          uint8_t byte = t[0][r * (cols / 2) + c / 2];
          v = FP4ToFloat((c % 2 == 0) ? (byte & 0xf) : (byte >> 4));
        } else {
          v = F8E4M3ToFloat(t[0][r * cols + c]);
        }
        w[r * cols + c] = v * E8M0ToFloat(t[1][scale_at(r, c)]);
      }
  } else {
    return absl::InvalidArgumentError("cannot dequantize format " + format);
  }
  return w;
}

}  // namespace llmc
