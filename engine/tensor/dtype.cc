#include "engine/tensor/dtype.h"

#include <cmath>

namespace llmc {

namespace {
struct DTypeInfo {
  DType dtype;
  absl::string_view name;
  absl::string_view torch_name;
  size_t size;
  bool is_float;
};
constexpr DTypeInfo kInfos[] = {
    {DType::kBool, "BOOL", "torch.bool", 1, false},
    {DType::kU8, "U8", "torch.uint8", 1, false},
    {DType::kI8, "I8", "torch.int8", 1, false},
    {DType::kI16, "I16", "torch.int16", 2, false},
    {DType::kU16, "U16", "torch.uint16", 2, false},
    {DType::kI32, "I32", "torch.int32", 4, false},
    {DType::kU32, "U32", "torch.uint32", 4, false},
    {DType::kI64, "I64", "torch.int64", 8, false},
    {DType::kU64, "U64", "torch.uint64", 8, false},
    {DType::kF16, "F16", "torch.float16", 2, true},
    {DType::kBF16, "BF16", "torch.bfloat16", 2, true},
    {DType::kF32, "F32", "torch.float32", 4, true},
    {DType::kF64, "F64", "torch.float64", 8, true},
    {DType::kF8E4M3, "F8_E4M3", "torch.float8_e4m3fn", 1, true},
    {DType::kF8E5M2, "F8_E5M2", "torch.float8_e5m2", 1, true},
    {DType::kF8E8M0, "F8_E8M0", "torch.float8_e8m0fnu", 1, true},
};
const DTypeInfo& Info(DType d) { return kInfos[static_cast<int>(d)]; }
}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
absl::string_view DTypeName(DType dtype) { return Info(dtype).name; }
absl::string_view TorchDTypeName(DType dtype) { return Info(dtype).torch_name; }
bool IsFloatingPoint(DType dtype) { return Info(dtype).is_float; }

std::optional<DType> ParseDType(absl::string_view name) {
  for (const auto& info : kInfos) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

// Generic RNE encoder for small IEEE-like formats with `ebits` exponent and `mbits` mantissa bits.
// Returns the magnitude code (no sign) for |f|, which must be finite. `max_code` caps the result.
static uint32_t EncodeMagnitude(float af, int ebits, int mbits, int bias) {
  // Smallest normal exponent is 1 - bias. Work in integer units of the smallest subnormal: 2^(1-bias-mbits).
  int e;
  std::frexp(af, &e);  // af = m * 2^e, m in [0.5, 1)
  int exp_unbiased = e - 1;
  int min_exp = 1 - bias;
  if (af == 0.0f) return 0;
  if (exp_unbiased < min_exp) exp_unbiased = min_exp;  // subnormal range uses the minimum exponent
  // quantum for this binade
  double quantum = std::ldexp(1.0, exp_unbiased - mbits);
  double q = static_cast<double>(af) / quantum;  // exact in double (af has 24 bits)
  double r = std::nearbyint(q);                  // ties to even in the default rounding mode
  uint64_t mant = static_cast<uint64_t>(r);
  // mant in [2^mbits, 2^(mbits+1)] for normals, may carry into next binade
  int biased = exp_unbiased + bias;
  if (mant >= (1ull << (mbits + 1))) {  // carry
    mant >>= 1;
    ++biased;
  }
  if (mant < (1ull << mbits)) {  // subnormal
    return static_cast<uint32_t>(mant);
  }
  return static_cast<uint32_t>((biased << mbits) | (mant & ((1u << mbits) - 1)));
}

uint16_t FloatToF16(float f) {
  uint32_t u = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(f)) return sign | 0x7e00;
  float af = std::fabs(f);
  if (std::isinf(f)) return sign | 0x7c00;
  uint32_t code = EncodeMagnitude(af, 5, 10, 15);
  if (code >= 0x7c00) return sign | 0x7c00;  // overflow to infinity
  return sign | static_cast<uint16_t>(code);
}

float F16ToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint8_t FloatToF8E4M3(float f) {
  uint8_t sign = (FloatBits(f) >> 24) & 0x80;
  if (std::isnan(f) || std::isinf(f)) return sign | 0x7f;
  uint32_t code = EncodeMagnitude(std::fabs(f), 4, 3, 7);
  if (code > 0x7e) return sign | 0x7f;  // above 448 after rounding: NaN (e4m3fn has no inf)
  return sign | static_cast<uint8_t>(code);
}

namespace {
float F8E4M3ToFloatSlow(uint8_t b) {
  bool neg = b & 0x80;
  uint32_t exp = (b >> 3) & 0xf;
  uint32_t mant = b & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) {
    v = std::nanf("");
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);
  } else {
    v = std::ldexp(1.0f + mant / 8.0f, static_cast<int>(exp) - 7);
  }
  return neg ? -v : v;
}
struct F8Table {
  float v[256];
  F8Table() {
    for (int i = 0; i < 256; ++i) v[i] = F8E4M3ToFloatSlow(static_cast<uint8_t>(i));
  }
};
}  // namespace

float F8E4M3ToFloat(uint8_t b) {
  static const F8Table table;
  return table.v[b];
}

uint8_t FloatToF8E5M2(float f) {
  uint8_t sign = (FloatBits(f) >> 24) & 0x80;
  if (std::isnan(f)) return sign | 0x7f;
  if (std::isinf(f)) return sign | 0x7c;
  uint32_t code = EncodeMagnitude(std::fabs(f), 5, 2, 15);
  if (code >= 0x7c) return sign | 0x7c;
  return sign | static_cast<uint8_t>(code);
}

float F8E5M2ToFloat(uint8_t b) { return F16ToFloat(static_cast<uint16_t>(b) << 8); }

namespace {
constexpr float kFP4Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
}

float FP4ToFloat(uint8_t code) {
  float v = kFP4Values[code & 0x7];
  return (code & 0x8) ? -v : v;
}

float LoadAsFloat(const void* data, DType dtype, size_t i) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  switch (dtype) {
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return BF16ToFloat(h);
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return F16ToFloat(h);
    }
    case DType::kF32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::kF64: {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      return static_cast<float>(d);
    }
    case DType::kF8E4M3: return F8E4M3ToFloat(p[i]);
    case DType::kF8E5M2: return F8E5M2ToFloat(p[i]);
    case DType::kF8E8M0: return E8M0ToFloat(p[i]);
    case DType::kBool:
    case DType::kU8: return p[i];
    case DType::kI8: return static_cast<int8_t>(p[i]);
    case DType::kI16: {
      int16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return v;
    }
    case DType::kU16: {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return v;
    }
    case DType::kI32: {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return static_cast<float>(v);
    }
    case DType::kU32: {
      uint32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return static_cast<float>(v);
    }
    case DType::kI64: {
      int64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      return static_cast<float>(v);
    }
    case DType::kU64: {
      uint64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      return static_cast<float>(v);
    }
  }
  return 0.0f;
}

}  // namespace llmc
