// Values in a model's floating-point weight dtype (bf16, f16 or f32): rounding to it and storing as its bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/tensor/dtype.h"

namespace llmc {

// `x` rounded to bf16 or f16 (nearest even) when `dtype` is one of them; unchanged for any other dtype.
inline float RoundToDType(float x, DType dtype) {
  return dtype == DType::kBF16 ? RoundBF16(x) : dtype == DType::kF16 ? RoundF16(x) : x;
}

// `v` as little-endian bytes of `dtype`, rounded to nearest even: bf16 or f16, else f32. `dtype` must be bf16, f16
// or f32 (the buffer holds DTypeSize(dtype) bytes an element).
inline std::vector<uint8_t> ToDTypeBytes(const std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> out(v.size() * DTypeSize(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kBF16) {
      uint16_t h = FloatToBF16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    } else if (dtype == DType::kF16) {
      uint16_t h = FloatToF16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    } else {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    }
  }
  return out;
}

}  // namespace llmc
