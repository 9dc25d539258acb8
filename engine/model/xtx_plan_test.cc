// The tensor-core Hessian plan of Blas::AccumulateXtX (engine/backend/cuda/xtx_plan.h) run on the host through a
// loop with cublasGemmEx's column-major semantics (OP_N, OP_T, every leading dimension `in`) and the upper triangle
// mirrored from the lower, against the full symmetric product over a symmetric start. Integer-valued inputs keep
// every sum exact, so the comparison is exact.
#include "engine/backend/cuda/xtx_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace llmc::cuda {
namespace {

// h += alpha a a^T through the plan; a = x^T column-major [in, rows] (x row-major [rows, in]).
void RunPlan(const XtXPlan& plan, const std::vector<float>& x, int64_t rows, int64_t in, float alpha,
             std::vector<float>* h) {
  auto a = [&](int64_t i, int64_t t) { return x[t * in + i]; };  // a(i, t) = base[i + t * in]
  for (const XtXGemm& g : plan.gemms) {
    ASSERT_LE(g.a_off + g.m, in);
    ASSERT_LE(g.b_off + g.n, in);
    for (int64_t j = 0; j < g.n; ++j)
      for (int64_t i = 0; i < g.m; ++i) {
        float sum = 0;
        for (int64_t t = 0; t < rows; ++t) sum += a(g.a_off + i, t) * a(g.b_off + j, t);  // A(i,:) . op(B)(:,j)
        (*h)[g.c_off + i + j * in] += alpha * sum;
      }
  }
  if (plan.mirror)
    for (int64_t col = 0; col < in; ++col)
      for (int64_t row = 0; row < col; ++row) (*h)[row + col * in] = (*h)[col + row * in];
}

TEST(XtXPlanTest, LowerTilesAndMirrorGiveTheFullProduct) {
  const int64_t tile = 8, rows = 5;
  for (int64_t in : {1, 7, 8, 9, 16, 17, 30}) {
    SCOPED_TRACE(in);
    std::vector<float> x(rows * in), h(in * in), ref;
    for (int64_t k = 0; k < rows * in; ++k) x[k] = static_cast<float>((k * 7 + 3) % 11) - 5;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j <= i; ++j) h[i * in + j] = h[j * in + i] = static_cast<float>((i * 3 + j) % 5);
    ref = h;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < in; ++j)
        for (int64_t t = 0; t < rows; ++t) ref[i * in + j] += 2.0f * x[t * in + i] * x[t * in + j];
    const XtXPlan plan = PlanXtX(in, tile);
    EXPECT_EQ(plan.mirror, in > tile);
    RunPlan(plan, x, rows, in, 2.0f, &h);
    for (int64_t k = 0; k < in * in; ++k) ASSERT_EQ(h[k], ref[k]) << "element " << k / in << "," << k % in;
  }
}

TEST(XtXPlanTest, WorkOfTheLlamaShapes) {
  auto work = [](int64_t in) {
    double w = 0;
    for (const XtXGemm& g : PlanXtX(in).gemms) w += static_cast<double>(g.m) * static_cast<double>(g.n);
    return w / (static_cast<double>(in) * static_cast<double>(in));
  };
  EXPECT_EQ(PlanXtX(2048).gemms.size(), 1u);
  EXPECT_FALSE(PlanXtX(2048).mirror);
  EXPECT_EQ(PlanXtX(4096).gemms.size(), 3u);  // 3 of 4 tiles
  EXPECT_DOUBLE_EQ(work(4096), 0.75);
  EXPECT_EQ(PlanXtX(14336).gemms.size(), 28u);  // 28 of 49 tiles
  EXPECT_DOUBLE_EQ(work(14336), 28.0 / 49.0);
  EXPECT_TRUE(PlanXtX(0).gemms.empty());
}

}  // namespace
}  // namespace llmc::cuda
