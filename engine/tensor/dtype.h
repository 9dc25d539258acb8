// Element types of tensors and exact conversions between them and float.
//
// Every conversion to a narrower type rounds to nearest, ties to even (RNE), exactly as PyTorch's
// `tensor.to(dtype)` does on CPU and CUDA. All functions are pure and thread-safe.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

namespace llmc {

enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kF16,
  kBF16,
  kF32,
  kF64,
  kF8E4M3,
  kF8E5M2,
  kF8E8M0,
};

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling ("BF16", "F8_E4M3", ...).
absl::string_view DTypeName(DType dtype);
// Parses a safetensors dtype name; nullopt if unknown.
std::optional<DType> ParseDType(absl::string_view name);
// The PyTorch spelling used in quantization_config ("torch.bfloat16", "torch.float8_e4m3fn", ...).
absl::string_view TorchDTypeName(DType dtype);
bool IsFloatingPoint(DType dtype);

// ---- float bit helpers ----
inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- bfloat16 ----
inline uint16_t FloatToBF16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}
inline float BF16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }
// Rounds a float to the nearest bfloat16 value (RNE) and returns it as float.
inline float RoundBF16(float f) { return BF16ToFloat(FloatToBF16(f)); }
// RoundBF16 for finite inputs only (no NaN branch, so loops vectorize).
inline float RoundBF16Finite(float f) {
  uint32_t u = FloatBits(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return BitsFloat(u & 0xffff0000u);
}
// Round half to even to an integer for |x| <= 2^22 (inlined; std::nearbyint is a libcall without SSE4.1).
inline float RoundHalfEvenSmall(float x) {
  // (x + 1.5 * 2^23) - 1.5 * 2^23 under IEEE round-to-nearest-even; not folded without -ffast-math.
  constexpr float m = 12582912.0f;
  return (x + m) - m;
}

// ---- float16 (IEEE binary16) ----
uint16_t FloatToF16(float f);
float F16ToFloat(uint16_t h);
inline float RoundF16(float f) { return F16ToFloat(FloatToF16(f)); }

// ---- float8 e4m3fn (no infinities, max 448, NaN = 0x7f/0xff) ----
// Values whose magnitude rounds above 448 become NaN, as in PyTorch (callers clamp first).
uint8_t FloatToF8E4M3(float f);
// FloatToF8E4M3 for finite |f| <= 448 (the clamped values quantizers pass): branch-light bit arithmetic.
inline uint8_t FloatToF8E4M3Clamped(float f) {
  // Both the subnormal and the normal encoding are computed and one is selected, so loops vectorize.
  uint32_t u = FloatBits(f);
  uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7fffffffu;
  constexpr float m = 12582912.0f;
  uint32_t sub = static_cast<uint32_t>(static_cast<int32_t>((BitsFloat(u) * 512.0f + m) - m));  // steps of 2^-9
  uint32_t norm = ((u + 0x7ffffu + ((u >> 20) & 1u)) >> 20) - (120u << 3);  // 3 mantissa bits, RNE, rebias
  uint32_t code = u < 0x3c800000u ? sub : norm;                               // below 2^-6: subnormal
  code = code > 0x7eu ? 0x7fu : code;
  return static_cast<uint8_t>(sign | code);
}
float F8E4M3ToFloat(uint8_t b);
inline float RoundF8E4M3(float f) { return F8E4M3ToFloat(FloatToF8E4M3(f)); }
constexpr float kF8E4M3Max = 448.0f;

// ---- float8 e5m2 ----
uint8_t FloatToF8E5M2(float f);
float F8E5M2ToFloat(uint8_t b);

// ---- e8m0 (exponent only, value 2^(e-127), 0xff = NaN) ----
inline float E8M0ToFloat(uint8_t e) {
  if (e == 0xff) return BitsFloat(0x7fc00000u);
  if (e == 0) return BitsFloat(0x00400000u);  // 2^-127 (subnormal in fp32)
  return BitsFloat(static_cast<uint32_t>(e) << 23);
}

// ---- fp4 e2m1: codes 0..15, sign bit 3, magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} ----
// Rounds to the nearest representable value with ties to the even code; |f| > 6 saturates to 6 (callers
// clamp first). NaN maps to +0.
inline uint8_t FloatToFP4(float f) {
  // The sign nibble follows the value's sign, so a small negative value rounding to zero is -0 (code 8), while
  // an exact +/-0.0 input stays code 0 (as compressed-tensors' cast and pack do).
  uint8_t sign = f < 0.0f ? 0x8 : 0x0;
  float a = std::fabs(f);
  // Count the thresholds passed; at a midpoint the comparison picks the even code (0.25 -> 0, 0.75 -> 1.0,
  // 1.25 -> 1.0, 1.75 -> 2.0, 2.5 -> 2.0, 3.5 -> 4.0, 5.0 -> 4.0). Branch-free; NaN compares false -> 0.
  uint8_t code = static_cast<uint8_t>((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                                      (a >= 3.5f) + (a > 5.0f));
  return sign | code;
}
float FP4ToFloat(uint8_t code);
constexpr float kFP4Max = 6.0f;

// Reads element `i` of a buffer of `dtype` as float (floating types and integers).
float LoadAsFloat(const void* data, DType dtype, size_t i);

}  // namespace llmc
