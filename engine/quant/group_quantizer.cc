#include "engine/quant/group_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "engine/quant/mse_grid.h"
#include "engine/quant/simd_kernels.h"
#include "engine/quant/model_dtype_math.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {
namespace {

constexpr float kF8Eps = 0.125f;  // torch.finfo(torch.float8_e4m3fn).eps



bool IsMse(const QuantArgs& a) { return IsMseSearch(a); }

bool IsIntFormat(const std::string& f, const QuantArgs& a) {
  return f == "pack-quantized" || f == "int-quantized" || (f == "naive-quantized" && a.type == QuantType::kInt);
}

uint8_t MxExponentOf(float amax, int elem_emax) {
  uint32_t bits = FloatBits(amax);
  bits = (bits + 0x200000u) & 0xff800000u;
  int e = static_cast<int>((bits >> 23) & 0xff);
  if (e == 0) return 0;
  return static_cast<uint8_t>(std::clamp(e - elem_emax, 0, 255));
}

// The arithmetic of one scheme: parameters from an observed range and the code of a value.
struct Arith {
  DType dtype;
  const QuantArgs* a;
  enum Kind { kInt, kFp8, kNvFp4, kMx } kind;
  float qmin = 0, qmax = 0;
  float global = 0;

  float R(float x) const { return RoundTo(dtype, x); }

  // (scale, zp) for the range [mn, mx] (already widened to include 0).
  std::pair<float, float> Params(float mn, float mx) const {
    switch (kind) {
      case kInt: {
        float scale, zp = 0;
        if (a->symmetric) {
          scale = R(std::max(-mn, mx) / ((qmax - qmin) / 2.0f));
        } else {
          scale = R(R(mx - mn) / (qmax - qmin));
        }
        if (scale == 0.0f) scale = DTypeEps(dtype);
        if (!a->symmetric) zp = std::nearbyint(std::clamp(R(qmin - R(mn / scale)), qmin, qmax));
        return {scale, zp};
      }
      case kFp8: {
        float s = R(std::max(-mn, mx) / kF8E4M3Max);
        return {s == 0.0f ? DTypeEps(dtype) : s, 0.0f};
      }
      case kNvFp4: {
        float amax = std::max(-mn, mx);
        float local = std::clamp(global * R(amax / kFP4Max), -kF8E4M3Max, kF8E4M3Max);
        uint8_t s8 = std::isfinite(local) ? FloatToF8E4M3Clamped(local) : FloatToF8E4M3(local);
        float sf = F8E4M3ToFloat(s8);
        if (sf == 0.0f) sf = kF8Eps;
        return {sf, 0.0f};
      }
      case kMx: {
        float amax = std::max(-mn, mx);
        return {E8M0ToFloat(MxExponentOf(amax, a->is_fp4() ? 2 : 8)), 0.0f};
      }
    }
    return {1.0f, 0.0f};
  }

  // The stored code of x (already in the model dtype) as a float: an integer for int schemes, the fp8/fp4 code
  // byte for float schemes.
  float Code(float x, float scale, float zp) const {
    switch (kind) {
      case kInt: {
        float s = R(x / scale);
        if (!a->symmetric) s = R(s + zp);
        return RoundHalfEvenSmall(std::clamp(s, qmin, qmax));
      }
      case kFp8:
        return FloatToF8E4M3Clamped(std::clamp(R(x / scale), -kF8E4M3Max, kF8E4M3Max));
      case kNvFp4:
        return FloatToFP4(std::clamp(x / (scale / global), -kFP4Max, kFP4Max));
      case kMx: {
        float y = R(x / R(scale));
        if (a->is_fp4()) return FloatToFP4(std::clamp(y, -kFP4Max, kFP4Max));
        return FloatToF8E4M3Clamped(std::clamp(y, -kF8E4M3Max, kF8E4M3Max));
      }
    }
    return 0;
  }

  // The dequantized value of a code, rounded to the model dtype.
  float Dequant(float code, float scale, float zp) const {
    switch (kind) {
      case kInt:
        return R(R(code - zp) * scale);
      case kFp8:
        return R(F8E4M3ToFloat(static_cast<uint8_t>(code)) * scale);
      case kNvFp4:
        return R(FP4ToFloat(static_cast<uint8_t>(code)) * (scale / global));
      case kMx:
        return R((a->is_fp4() ? FP4ToFloat(static_cast<uint8_t>(code)) : F8E4M3ToFloat(static_cast<uint8_t>(code))) *
                 R(scale));
    }
    return 0;
  }
};

absl::StatusOr<Arith> MakeArith(absl::string_view module, DType dtype, const QuantArgs& a, const std::string& format,
                                std::optional<float> global_scale) {
  Arith ar{dtype, &a, Arith::kInt};
  if (IsIntFormat(format, a)) {
    ar.kind = Arith::kInt;
    ar.qmax = static_cast<float>((1 << (a.num_bits - 1)) - 1);
    ar.qmin = -static_cast<float>(1 << (a.num_bits - 1));
  } else if (format == "float-quantized" || format == "naive-quantized") {
    ar.kind = Arith::kFp8;
  } else if (format == "nvfp4-pack-quantized") {
    ar.kind = Arith::kNvFp4;
    if (!global_scale || !(*global_scale > 0) || !std::isfinite(*global_scale))
      return absl::InvalidArgumentError(absl::StrCat(module, ": NVFP4 needs a finite positive global scale"));
    ar.global = *global_scale;
  } else if (format == "mxfp4-pack-quantized" || format == "mxfp8-quantized") {
    ar.kind = Arith::kMx;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(module, ": unknown compression format '", format, "'"));
  }
  if (IsMse(a) && (ar.kind == Arith::kNvFp4 || ar.kind == Arith::kMx))
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": the mse observer is not supported for NVFP4/MX weights; use minmax"));
  return ar;
}

}  // namespace

absl::StatusOr<GroupQuantizer> GroupQuantizer::Create(absl::string_view module, int64_t rows, int64_t cols,
                                                      DType dtype, const QuantArgs& args, const std::string& format,
                                                      std::optional<float> global_scale) {
  LLMC_RETURN_IF_ERROR(args.Validate(module));
  if (args.strategy == Strategy::kBlock)
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": the block strategy cannot be solved column by column (GPTQ/SparseGPT); use RTN for FP8_BLOCK"));
  // Shapes, dtype and format compatibility are PlanQuantizedWeight's rules.
  LLMC_RETURN_IF_ERROR(PlanQuantizedWeight(module, rows, cols, dtype, args, format).status());
  LLMC_ASSIGN_OR_RETURN(Arith ar, MakeArith(module, dtype, args, format, global_scale));
  GroupQuantizer q;
  q.kind_ = ar.kind;
  q.qmin_ = ar.qmin;
  q.qmax_ = ar.qmax;
  q.module_ = std::string(module);
  q.dtype_ = dtype;
  q.args_ = args;
  q.format_ = format;
  WeightQParams& p = q.p_;
  p.rows = rows;
  p.cols = cols;
  switch (args.strategy) {
    case Strategy::kGroup:
    case Strategy::kTensorGroup:
      p.group_cols = *args.group_size;
      p.num_groups = cols / p.group_cols;
      break;
    case Strategy::kChannel:
      p.group_cols = cols;
      p.num_groups = 1;
      break;
    case Strategy::kTensor:
      p.group_cols = cols;
      p.num_groups = 1;
      p.per_row = false;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(module, ": unsupported weight strategy ", StrategyName(args.strategy)));
  }
  const int64_t n = p.per_row ? rows * p.num_groups : p.num_groups;
  p.scale.assign(n, 0.0f);
  if (IsIntFormat(format, args) && !args.symmetric) p.zero_point.assign(n, 0.0f);
  if (format == "nvfp4-pack-quantized") p.global_scale = *global_scale;
  return q;
}

void GroupQuantizer::PermuteImportance(const std::vector<int64_t>& perm) {
  if (importance_.empty() || perm.empty()) return;
  std::vector<float> out(perm.size());
  for (size_t j = 0; j < perm.size(); ++j) out[j] = importance_[perm[j]];
  importance_ = std::move(out);
}

absl::Status GroupQuantizer::Observe(const float* w, int64_t ld, int64_t c0, int64_t n, int64_t g) {
  if (g < 0 || g >= p_.num_groups || c0 < 0 || n <= 0 || c0 + n > p_.cols)
    return absl::InvalidArgumentError(absl::StrCat(module_, ": group ", g, " / columns [", c0, ", ", c0 + n, ") out of range"));
  const Arith ar{dtype_, &args_, static_cast<Arith::Kind>(kind_), qmin_, qmax_, p_.global_scale};
  auto nonfinite = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(module_, ": weight contains NaN or Inf during the solve; check the model and calibration data"));
  };
  // Range of rows [r0, r1) of the group, widened to include 0, on dtype-rounded values.
  auto range = [&](int64_t r0, int64_t r1, float* mn, float* mx) -> bool {
    float lo = 0.0f, hi = 0.0f;
    bool finite = true;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c0 + n; ++c) {
        float x = ar.R(w[r * ld + c]);
        finite &= std::isfinite(x);
        lo = std::min(lo, x);
        hi = std::max(hi, x);
      }
    *mn = lo;
    *mx = hi;
    return finite;
  };
  // The mse / imatrix_mse search (mse_grid.h): shrink the range by p = 1 - i/grid and keep the lowest sum
  // importance_c |err|^norm (importance 1 for mse).
  const bool weighted = IsImatrixObserver(args_);
  if (weighted && static_cast<int64_t>(importance_.size()) != p_.cols)
    return absl::FailedPreconditionError(absl::StrCat(
        module_, ": the imatrix_mse observer needs the activation statistics of a calibrated job"));
  auto mse = [&](int64_t r0, int64_t r1, float* mn, float* mx) {
    const MseGrid mg = MseGridOf(args_);
    const float grid = static_cast<float>(mg.grid);
    float best = INFINITY, bmn = *mn, bmx = *mx;
    for (int64_t i = 0; i < mg.steps; ++i) {
      float pr = 1.0f - i / grid;
      float cmn = ar.R(pr * *mn), cmx = ar.R(pr * *mx);
      auto [s, z] = ar.Params(cmn, cmx);
      double err = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c0 + n; ++c) {
          float x = ar.R(w[r * ld + c]);
          const double e = std::pow(std::fabs(static_cast<double>(ar.Dequant(ar.Code(x, s, z), s, z)) - x), mg.norm);
          err += weighted ? importance_[c] * e : e;
        }
      if (err < best) {
        best = static_cast<float>(err);
        bmn = cmn;
        bmx = cmx;
      }
    }
    *mn = bmn;
    *mx = bmx;
  };
  auto set = [&](int64_t idx, int64_t r0, int64_t r1) -> absl::Status {
    float mn, mx;
    if (!range(r0, r1, &mn, &mx)) return nonfinite();
    if (IsMse(args_)) mse(r0, r1, &mn, &mx);
    auto [s, z] = ar.Params(mn, mx);
    p_.scale[idx] = s;
    if (!p_.zero_point.empty()) p_.zero_point[idx] = z;
    return absl::OkStatus();
  };
  if (!p_.per_row) return set(g, 0, p_.rows);
  for (int64_t r = 0; r < p_.rows; ++r) LLMC_RETURN_IF_ERROR(set(r * p_.num_groups + g, r, r + 1));
  return absl::OkStatus();
}

float GroupQuantizer::FakeQuant(float x, int64_t r, int64_t g) const {
  const Arith ar{dtype_, &args_, static_cast<Arith::Kind>(kind_), qmin_, qmax_, p_.global_scale};
  const int64_t idx = p_.per_row ? r * p_.num_groups + g : g;
  const float s = p_.scale[idx], z = p_.zero_point.empty() ? 0.0f : p_.zero_point[idx];
  return ar.Dequant(ar.Code(ar.R(x), s, z), s, z);
}

absl::StatusOr<std::vector<std::vector<uint8_t>>> EncodeQuantizedWeight(absl::string_view module, const float* q,
                                                                        DType dtype, const QuantArgs& a,
                                                                        const std::string& format,
                                                                        const WeightQParams& p, int threads) {
  const int64_t R = p.rows, C = p.cols;
  LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight(module, R, C, dtype, a, format));
  LLMC_ASSIGN_OR_RETURN(Arith ar, MakeArith(module, dtype, a, format, p.global_scale));
  const int64_t nscale = p.per_row ? R * p.num_groups : p.num_groups;
  if (static_cast<int64_t>(p.scale.size()) != nscale || p.group_cols <= 0 ||
      (!p.g_idx.empty() && static_cast<int64_t>(p.g_idx.size()) != C))
    return absl::InvalidArgumentError(absl::StrCat(module, ": quantization parameters do not match the weight shape"));
  for (int32_t gi : p.g_idx)
    if (gi < 0 || gi >= p.num_groups) return absl::InvalidArgumentError(absl::StrCat(module, ": g_idx out of range"));
  std::vector<std::vector<uint8_t>> out;
  for (const auto& t : plan) out.emplace_back(t.nbytes(), 0);
  auto group_of = [&](int64_t c) -> int64_t { return p.g_idx.empty() ? c / p.group_cols : p.g_idx[c]; };
  auto sidx = [&](int64_t r, int64_t g) { return p.per_row ? r * p.num_groups + g : g; };
  auto store_scale = [&](uint8_t* dst, int64_t i, float v) {
    if (dtype == DType::kBF16) {
      uint16_t h = FloatToBF16(v);
      std::memcpy(dst + 2 * i, &h, 2);
    } else if (dtype == DType::kF16) {
      uint16_t h = FloatToF16(v);
      std::memcpy(dst + 2 * i, &h, 2);
    } else {
      std::memcpy(dst + 4 * i, &v, 4);
    }
  };
  auto code_at = [&](int64_t r, int64_t c) {
    int64_t i = sidx(r, group_of(c));
    float z = p.zero_point.empty() ? 0.0f : p.zero_point[i];
    const float x = ar.R(q[r * C + c]);
    const float s = p.scale[i];
    float code = ar.Code(x, s, z);
    // x is a value FakeQuant produced; requantizing it can land one step off when the product (q - zp) * scale
    // was rounded to the model dtype (8-bit codes in bf16). Take the neighbouring code that dequantizes to x.
    if ((ar.kind == Arith::kInt || ar.kind == Arith::kFp8) && ar.Dequant(code, s, z) != x) {
      for (float d : {-1.0f, 1.0f}) {
        float alt = code + d;
        if (ar.kind == Arith::kInt && (alt < ar.qmin || alt > ar.qmax)) continue;
        if (ar.kind == Arith::kFp8) {
          uint8_t b = static_cast<uint8_t>(code);
          uint8_t mag = b & 0x7f;
          if ((d < 0 && mag == 0) || (d > 0 && mag >= 0x7e)) continue;
          alt = static_cast<float>((b & 0x80) | (mag + static_cast<int>(d)));
        }
        if (ar.Dequant(alt, s, z) == x) {
          code = alt;
          break;
        }
      }
    }
    return code;
  };
  // fn(r0, r1) for row ranges covering [0, R), on up to `threads` threads: every row's bytes depend on that row
  // alone, so the ranges write disjoint parts of the output.
  auto for_rows = [&](const std::function<void(int64_t, int64_t)>& fn) {
    constexpr int64_t kMinRowElements = int64_t{1} << 20;  // below this a thread costs more than it saves
    const int64_t pieces = std::clamp<int64_t>(std::min<int64_t>(threads, R * C / kMinRowElements), 1, R);
    const int64_t per = (R + pieces - 1) / pieces;
    (void)ParallelFor(pieces, static_cast<int>(pieces), [&](int64_t i) {
      fn(i * per, std::min(R, (i + 1) * per));
      return absl::OkStatus();
    });
  };
  switch (ar.kind) {
    case Arith::kInt: {
      const bool packed = format == "pack-quantized";
      for_rows([&](int64_t r0, int64_t r1) {
        std::vector<int8_t> row(C);
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = 0; c < C; ++c) row[c] = static_cast<int8_t>(code_at(r, c));
          if (packed) {
            const int64_t words = (C + 32 / a.num_bits - 1) / (32 / a.num_bits);
            simd::PackRow(row.data(), C, a.num_bits, reinterpret_cast<uint32_t*>(out[0].data() + r * words * 4));
          } else {
            std::memcpy(out[0].data() + r * C, row.data(), C);
          }
        }
      });
      for (int64_t i = 0; i < nscale; ++i) store_scale(out[1].data(), i, p.scale[i]);
      if (packed) {
        int64_t shape[2] = {R, C};
        std::memcpy(out[2].data(), shape, 16);
      }
      if (!a.symmetric) {
        std::vector<int8_t> zps(nscale);
        for (int64_t i = 0; i < nscale; ++i) zps[i] = static_cast<int8_t>(p.zero_point[i]);
        if (packed) {
          auto zp = PackInt32(zps.data(), p.per_row ? R : 1, p.num_groups, a.num_bits, 0);
          std::memcpy(out[3].data(), zp.data(), zp.size() * 4);
        } else {
          std::memcpy(out[2].data(), zps.data(), zps.size());
        }
      }
      break;
    }
    case Arith::kFp8:
      for_rows([&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < C; ++c) out[0][r * C + c] = static_cast<uint8_t>(code_at(r, c));
      });
      for (int64_t i = 0; i < nscale; ++i) store_scale(out[1].data(), i, p.scale[i]);
      break;
    case Arith::kNvFp4:
    case Arith::kMx: {
      const bool fp4 = ar.kind == Arith::kNvFp4 || a.is_fp4();
      for_rows([&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < C; ++c) {
            uint8_t code = static_cast<uint8_t>(code_at(r, c));
            if (fp4) out[0][r * (C / 2) + c / 2] |= (c % 2 == 0) ? code : static_cast<uint8_t>(code << 4);
            else out[0][r * C + c] = code;
          }
      });
      for (int64_t i = 0; i < nscale; ++i) {
        if (ar.kind == Arith::kNvFp4) {
          out[1][i] = FloatToF8E4M3(p.scale[i]);
        } else {
          out[1][i] = static_cast<uint8_t>(p.scale[i] > 0 ? ((FloatBits(p.scale[i]) >> 23) & 0xff) : 0);
        }
      }
      if (ar.kind == Arith::kNvFp4) std::memcpy(out[2].data(), &p.global_scale, 4);
      break;
    }
  }
  if (!p.g_idx.empty()) {
    std::vector<uint8_t> gi(C * 4);
    std::memcpy(gi.data(), p.g_idx.data(), C * 4);
    out.push_back(std::move(gi));
  }
  return out;
}

}  // namespace llmc
