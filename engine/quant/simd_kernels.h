// Inner loops of RTN quantization for bf16 weights, written so the compiler vectorizes them; built with -O3
// and cloned for AVX2 (chosen at run time, plain x86-64 otherwise). They compute exactly what the scalar
// reference in weight_quantizer.cc computes (checked bit for bit by the golden tests).
#pragma once

#include <cstdint>

namespace llmc::simd {

// min(0, x...) and max(0, x...) of n bf16 values; false if any is NaN or Inf.
bool RangeBF16(const uint16_t* x, int64_t n, float* lo, float* hi);

// No NaN or Inf among n 16-bit floats (exponent_mask: 0x7f80 for bf16, 0x7c00 for fp16) or 32-bit floats.
bool AllFinite16(const uint16_t* x, int64_t n, uint16_t exponent_mask);
bool AllFinite32(const uint32_t* x, int64_t n);

// q[i] = rne(clamp(bf16(x[i] / scale), qmin, qmax))                     (symmetric)
// q[i] = rne(clamp(bf16(bf16(x[i] / scale) + zp), qmin, qmax))          (asymmetric)
void QuantIntBF16(const uint16_t* x, int64_t n, float scale, float zp, bool asymmetric, float qmin, float qmax,
                  int8_t* q);

// q[i] = fp8_e4m3(clamp(bf16(x[i] / scale), -448, 448))
void QuantFp8BF16(const uint16_t* x, int64_t n, float scale, uint8_t* q);

// amax[g] = max |x| over each group of `group` values of a row of n bf16 values; false on NaN or Inf.
bool GroupAbsMaxBF16(const uint16_t* x, int64_t n, int64_t group, float* amax);

// fp4 e2m1 codes of clamp(x[i] / div[i / group], -6, 6) (rounded to bf16 first when round_bf16), packed two per
// byte with element 2j in the low nibble. n must be even.
void QuantFp4RowBF16(const uint16_t* x, int64_t n, int64_t group, const float* div, bool round_bf16, uint8_t* packed);

// Packs n signed `bits`-wide values into int32 words, 32/bits per word, LSB first (pack_to_int32 along dim 1).
void PackRow(const int8_t* q, int64_t n, int bits, uint32_t* words);

}  // namespace llmc::simd
