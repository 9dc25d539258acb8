// The GEMMs of Blas::AccumulateXtX's tensor-core paths (blas.cu) as plain numbers, so that the host can check them:
// engine/model/xtx_plan_test.cc runs the plan through a loop with cublasGemmEx's column-major semantics and the
// mirror, against the full product. No CUDA types here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace llmc::cuda {

// Wider Hessians than this are accumulated tile by tile, only the tiles on and below the diagonal.
inline constexpr int64_t kXtXTileCols = 2048;

// One GEMM of the plan, column-major with every leading dimension `in`: with a = x^T [in, rows] (x row-major
// [rows, in]), C [m, n] at h + c_off += alpha * A B^T, A = rows [a_off, a_off + m) of a, B = rows [b_off, b_off + n).
struct XtXGemm {
  int64_t m = 0, n = 0, a_off = 0, b_off = 0, c_off = 0;
};

struct XtXPlan {
  std::vector<XtXGemm> gemms;
  bool mirror = false;  // the upper triangle is then copied from the lower one (row >= col, column-major)
};

// Up to `tile` columns: one GEMM over the whole square (no mirror). Wider: the tiles on and below the diagonal,
// tile x tile (the last row and column of tiles narrower), then the mirror: (k + 1) / 2k of the full product's
// work for k tiles a side.
inline XtXPlan PlanXtX(int64_t in, int64_t tile = kXtXTileCols) {
  XtXPlan p;
  if (in <= 0) return p;
  if (tile <= 0 || in <= tile) {
    p.gemms.push_back({in, in, 0, 0, 0});
    return p;
  }
  for (int64_t j0 = 0; j0 < in; j0 += tile)
    for (int64_t i0 = j0; i0 < in; i0 += tile)
      p.gemms.push_back({std::min(tile, in - i0), std::min(tile, in - j0), i0, j0, i0 + j0 * in});
  p.mirror = true;
  return p;
}

}  // namespace llmc::cuda
