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
  // Per chunk of 256: the divisor of each element (no integer division in the hot loop), one code per element
  // (a plain loop the compiler vectorizes), then two codes per byte.
  constexpr int64_t kChunk = 256;
  uint32_t codes[kChunk];
  float dv[kChunk];
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t m = n - c0 < kChunk ? n - c0 : kChunk;
    int64_t gi = c0 / group, k = c0 % group;
    for (int64_t i = 0; i < m; ++i) {
      dv[i] = div[gi];
      if (++k == group) {
        k = 0;
        ++gi;
      }
    }
    // Divide first, classify after: in one loop the compiler gives up on vectorizing.
    for (int64_t i = 0; i < m; ++i) {
      float y = Bf16(x[c0 + i]) / dv[i];
      if (round_bf16) y = RoundBF16Finite(y);
      dv[i] = y;
    }
    for (int64_t i = 0; i < m; ++i) {
      float y = dv[i];
      y = y < -kFP4Max ? -kFP4Max : (y > kFP4Max ? kFP4Max : y);
      const float a = y < 0.0f ? -y : y;
      codes[i] = static_cast<uint32_t>(a > 0.25f) + static_cast<uint32_t>(a >= 0.75f) +
                 static_cast<uint32_t>(a > 1.25f) + static_cast<uint32_t>(a >= 1.75f) +
                 static_cast<uint32_t>(a > 2.5f) + static_cast<uint32_t>(a >= 3.5f) + static_cast<uint32_t>(a > 5.0f) +
                 (y < 0.0f ? 8u : 0u);
    }
    for (int64_t j = 0; j < m / 2; ++j)
      packed[c0 / 2 + j] = static_cast<uint8_t>(codes[2 * j] | (codes[2 * j + 1] << 4));
  }
}

LLMC_CLONES void PackRow(const int8_t* q, int64_t n, int bits, uint32_t* words) {
  const int pf = 32 / bits;
  const uint32_t offset = 1u << (bits - 1), mask = (1u << bits) - 1;
  const int64_t full = n / pf;
  if (bits == 8) {
    for (int64_t w = 0; w < full; ++w) {
      const int8_t* s = q + w * 4;
      words[w] = (static_cast<uint32_t>(static_cast<uint8_t>(s[0] + 128))) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(s[1] + 128)) << 8) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(s[2] + 128)) << 16) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(s[3] + 128)) << 24);
    }
  } else if (bits == 4) {
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
