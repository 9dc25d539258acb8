// The range searches of the weight observers `mse` (memoryless_mse) and `imatrix_mse`, as llm-compressor's
// observers run them: the observed [min, max] of a group shrinks by p = 1 - i / grid for the steps i below, and
// the p whose quantize-dequantize error sum |Q(w) - w|^norm is lowest wins (the first on ties). imatrix_mse weighs
// each column's error by its importance, E[x^2] of that input channel over the calibration tokens, divided by its
// mean over the channels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "engine/format/quant_scheme.h"

namespace llmc {

inline bool IsMseSearch(const QuantArgs& a) {
  return a.observer && (*a.observer == "mse" || *a.observer == "memoryless_mse" || *a.observer == "imatrix_mse");
}
inline bool IsImatrixObserver(const QuantArgs& a) { return a.observer && *a.observer == "imatrix_mse"; }

struct MseGrid {
  double norm = 2.4;
  double grid = 100.0;
  int64_t steps = 20;  // i in [0, steps)
};

// mse: norm 2.4, grid 100, maxshrink 0.2 and steps i < maxshrink * grid (MemorylessMSEObserver); imatrix_mse: norm 3,
// grid 20, maxshrink 0.95 and steps i <= max(1, int(maxshrink * grid)) (IMatrixMSEObserver). observer_kwargs override
// norm, grid and maxshrink (validated numeric by QuantArgs::Validate).
inline MseGrid MseGridOf(const QuantArgs& a) {
  const bool imatrix = IsImatrixObserver(a);
  auto kw = [&](const char* key, double dflt) {
    auto it = a.observer_kwargs.find(key);
    return it != a.observer_kwargs.end() && it->is_number() ? it->template get<double>() : dflt;
  };
  MseGrid g;
  g.norm = kw("norm", imatrix ? 3.0 : 2.4);
  g.grid = kw("grid", imatrix ? 20.0 : 100.0);
  const double maxshrink = std::min(kw("maxshrink", imatrix ? 0.95 : 0.2), 1.0);
  g.steps = imatrix ? std::max<int64_t>(1, static_cast<int64_t>(maxshrink * g.grid)) + 1
                    : static_cast<int64_t>(static_cast<float>(maxshrink) * static_cast<float>(g.grid));
  return g;
}

}  // namespace llmc
