#include "engine/algo/column_walk.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace llmc {
namespace {

// Rounds to multiples of 1/4: a stand-in quantizer.
struct QuarterPolicy {
  void StartBlock(int64_t, int64_t, const float*) {}
  void StartColumn(int64_t, int64_t, const float*, int64_t, int64_t) {}
  auto Column(int64_t, int64_t) const {
    return [](float x, int64_t) { return std::nearbyint(x * 4.0f) / 4.0f; };
  }
  const float* BlockKeep(int64_t) const { return nullptr; }
  bool masks_trailing() const { return false; }
  void SubtractTrailing(int64_t, int64_t, int64_t, const float*, float*) const {}
};

// An upper-triangular factor with a positive diagonal, [n, n] row-major.
std::vector<float> Factor(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-0.3f, 0.3f);
  std::vector<float> u(n * n, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    u[i * n + i] = 1.0f + std::fabs(uni(rng));
    for (int64_t j = i + 1; j < n; ++j) u[i * n + j] = uni(rng);
  }
  return u;
}

std::vector<float> Weight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(rows * cols);
  for (float& v : w) v = normal(rng);
  return w;
}

// The plain OBS walk in fp64, one column at a time, every later column updated at once.
std::vector<double> Reference(std::vector<double> w, const std::vector<float>& u, int64_t rows, int64_t cols,
                              double* loss) {
  *loss = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const double d = u[c * cols + c];
    for (int64_t r = 0; r < rows; ++r) {
      const double x = w[r * cols + c];
      const double q = std::nearbyint(x * 4.0) / 4.0;
      const double e = (x - q) / d;
      *loss += (x - q) * (x - q) / (d * d) / 2;
      w[r * cols + c] = q;
      for (int64_t j = c + 1; j < cols; ++j) w[r * cols + j] -= e * u[c * cols + j];
    }
  }
  return w;
}

TEST(ColumnWalkTest, MatchesThePlainWalkForEveryBlockSizeAndThreadCount) {
  const int64_t rows = 200, cols = 37;  // 200 rows: up to 3 threads
  const std::vector<float> u = Factor(cols, 3);
  const std::vector<float> w0 = Weight(rows, cols, 4);
  double ref_loss = 0;
  const std::vector<double> ref = Reference(std::vector<double>(w0.begin(), w0.end()), u, rows, cols, &ref_loss);
  std::vector<float> first;
  for (int64_t block : {int64_t{1}, int64_t{5}, int64_t{16}, cols}) {
    for (int threads : {1, 3}) {
      std::vector<float> w = w0;
      QuarterPolicy p;
      const std::vector<double> row_loss = WalkColumns(w.data(), rows, cols, u.data(), block, threads, &p);
      double loss = 0;
      for (double l : row_loss) loss += l;
      EXPECT_NEAR(loss / 2, ref_loss, 1e-3 * ref_loss) << block << " " << threads;
      int64_t off_grid = 0, differ = 0;
      for (int64_t i = 0; i < rows * cols; ++i) {
        off_grid += w[i] * 4.0f != std::nearbyint(w[i] * 4.0f);
        differ += w[i] != static_cast<float>(ref[i]);
      }
      EXPECT_EQ(off_grid, 0);
      // fp32 against fp64: a value lands on the other side of a rounding boundary now and then.
      EXPECT_LT(differ, rows * cols / 50) << block << " " << threads;
      // Rows are independent: the thread count changes no bit.
      if (threads == 1) first = w;
      else EXPECT_EQ(w, first) << block;
    }
  }
}

}  // namespace
}  // namespace llmc
