// What compressed-tensors' arithmetic in the model dtype needs on the host: rounding a float to the dtype and
// torch.finfo(dtype).eps (what the library puts in place of a zero scale).
#pragma once

#include "engine/tensor/dtype.h"

namespace llmc {

// x rounded to bf16 or fp16; other dtypes: x unchanged (fp32 math).
inline float RoundTo(DType d, float x) {
  switch (d) {
    case DType::kBF16:
      return RoundBF16(x);
    case DType::kF16:
      return RoundF16(x);
    default:
      return x;
  }
}

// torch.finfo(d).eps for bf16 and fp16, fp32's otherwise.
inline float DTypeEps(DType d) {
  switch (d) {
    case DType::kBF16:
      return 0.0078125f;
    case DType::kF16:
      return 0.0009765625f;
    default:
      return 1.1920928955078125e-07f;
  }
}

}  // namespace llmc
