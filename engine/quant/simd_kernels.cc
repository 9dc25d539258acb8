#include "engine/quant/simd_kernels.h"

#include <cstring>

#include "engine/tensor/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define LLMC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LLMC_CLONES
#endif

namespace llmc::simd {

namespace {
inline float Bf16(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }
inline float Rne(float x) {
  constexpr float m = 12582912.0f;
  return (x + m) - m;
}
}  // namespace

// Works on order-preserving integer keys of the bf16 bit patterns (float min/max reductions do not vectorize
// without fast-math): key = bits for x >= 0, -(bits & 0x7fff) for x < 0, so -0 and +0 both map to 0.
LLMC_CLONES bool RangeBF16(const uint16_t* x, int64_t n, float* lo, float* hi) {
  int32_t kl = 0, kh = 0;
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t h = x[i];
    const int32_t k = (h & 0x8000) ? -(h & 0x7fff) : h;
    kl = k < kl ? k : kl;
    kh = k > kh ? k : kh;
    bad |= static_cast<uint32_t>((h & 0x7f80) == 0x7f80);
  }
  auto decode = [](int32_t k) {
    uint16_t h = k < 0 ? static_cast<uint16_t>(0x8000 | (-k)) : static_cast<uint16_t>(k);
    return Bf16(h);
  };
  *lo = decode(kl);
  *hi = decode(kh);
  return bad == 0;
}

LLMC_CLONES bool AllFinite16(const uint16_t* x, int64_t n, uint16_t exponent_mask) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((x[i] & exponent_mask) == exponent_mask);
  return bad == 0;
}

LLMC_CLONES bool AllFinite32(const uint32_t* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((x[i] & 0x7f800000u) == 0x7f800000u);
  return bad == 0;
}

LLMC_CLONES void QuantIntBF16(const uint16_t* x, int64_t n, float scale, float zp, bool asymmetric, float qmin,
                              float qmax, int8_t* q) {
  if (asymmetric) {
    for (int64_t i = 0; i < n; ++i) {
      float y = RoundBF16Finite(RoundBF16Finite(Bf16(x[i]) / scale) + zp);
      y = y < qmin ? qmin : y;
      y = y > qmax ? qmax : y;
      q[i] = static_cast<int8_t>(static_cast<int32_t>(Rne(y)));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      float y = RoundBF16Finite(Bf16(x[i]) / scale);
      y = y < qmin ? qmin : y;
      y = y > qmax ? qmax : y;
      q[i] = static_cast<int8_t>(static_cast<int32_t>(Rne(y)));
    }
  }
}

LLMC_CLONES void QuantFp8BF16(const uint16_t* x, int64_t n, float scale, uint8_t* q) {
  for (int64_t i = 0; i < n; ++i) {
    float y = RoundBF16Finite(Bf16(x[i]) / scale);
    y = y < -kF8E4M3Max ? -kF8E4M3Max : y;
    y = y > kF8E4M3Max ? kF8E4M3Max : y;
    q[i] = FloatToF8E4M3Clamped(y);
  }
}

LLMC_CLONES bool GroupAbsMaxBF16(const uint16_t* x, int64_t n, int64_t group, float* amax) {
  uint32_t bad = 0;
  for (int64_t g = 0; g < n / group; ++g) {
    const uint16_t* s = x + g * group;
    uint32_t m = 0;
    for (int64_t i = 0; i < group; ++i) {
      uint32_t h = s[i] & 0x7fffu;
      m = h > m ? h : m;
      bad |= static_cast<uint32_t>((h & 0x7f80u) == 0x7f80u);
    }
    amax[g] = Bf16(static_cast<uint16_t>(m));
  }
  return bad == 0;
}

LLMC_CLONES void QuantFp4RowBF16(const uint16_t* x, int64_t n, int64_t group, const float* div, bool round_bf16,
                                 uint8_t* packed) {
  for (int64_t g = 0; g < n / group; ++g) {
    const float d = div[g];
    const uint16_t* s = x + g * group;
    uint8_t* dst = packed + g * group / 2;
    for (int64_t j = 0; j < group; j += 2) {
      float y0 = Bf16(s[j]) / d, y1 = Bf16(s[j + 1]) / d;
      if (round_bf16) {
        y0 = RoundBF16Finite(y0);
        y1 = RoundBF16Finite(y1);
      }
      y0 = y0 < -kFP4Max ? -kFP4Max : (y0 > kFP4Max ? kFP4Max : y0);
      y1 = y1 < -kFP4Max ? -kFP4Max : (y1 > kFP4Max ? kFP4Max : y1);
      dst[j / 2] = static_cast<uint8_t>(FloatToFP4(y0) | (FloatToFP4(y1) << 4));
    }
  }
}

LLMC_CLONES void PackRow(const int8_t* q, int64_t n, int bits, uint32_t* words) {
  const int pf = 32 / bits;
  const uint32_t offset = 1u << (bits - 1), mask = (1u << bits) - 1;
  const int64_t full = n / pf;
  if (bits == 4) {
    for (int64_t w = 0; w < full; ++w) {
      const int8_t* s = q + w * 8;
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= ((static_cast<uint32_t>(s[i] + 8)) & 0xfu) << (4 * i);
      words[w] = word;
    }
  } else {
    for (int64_t w = 0; w < full; ++w) {
      uint32_t word = 0;
      for (int i = 0; i < pf; ++i) word |= ((static_cast<uint32_t>(q[w * pf + i]) + offset) & mask) << (i * bits);
      words[w] = word;
    }
  }
  if (full * pf < n) {
    uint32_t word = 0;
    for (int64_t c = full * pf; c < n; ++c) word |= ((static_cast<uint32_t>(q[c]) + offset) & mask) << ((c - full * pf) * bits);
    words[full] = word;
  }
}

}  // namespace llmc::simd
