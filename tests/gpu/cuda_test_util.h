// Helpers for the GPU tests: skipping without a device, host <-> device copies, error measures, source paths
// (LLMC_SOURCE_DIR and LLMC_SHARED_DIR may be set at run time, for binaries taken to another machine).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cuda/rtn_kernels.h"
#include "engine/model/cuda_context.h"

namespace llmc::gpu_test {

#define LLMC_SKIP_WITHOUT_CUDA()                                           \
  do {                                                                     \
    std::string why_;                                                      \
    if (::llmc::cuda::DeviceCount(&why_) == 0) GTEST_SKIP() << "no CUDA device: " << why_; \
  } while (0)

// The source tree: $LLMC_SOURCE_DIR when set (binaries run elsewhere), else the one they were built from.
inline std::string SourceDir() {
  if (const char* env = std::getenv("LLMC_SOURCE_DIR"); env != nullptr && *env != '\0') return env;
  return LLMC_SOURCE_DIR;
}
inline std::string ModelTestData() { return SourceDir() + "/engine/model/testdata"; }

template <typename T>
DeviceArray<T> ToDevice(const std::vector<T>& v) {
  auto d = DeviceArray<T>::Create(std::max<int64_t>(1, static_cast<int64_t>(v.size())), "test");
  EXPECT_TRUE(d.ok()) << d.status();
  if (!v.empty()) {
    EXPECT_EQ(cudaMemcpy(d->data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return std::move(*d);
}

template <typename T>
std::vector<T> ToHost(const DeviceArray<T>& d, int64_t n) {
  std::vector<T> v(static_cast<size_t>(n));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (n > 0) {
    EXPECT_EQ(cudaMemcpy(v.data(), d.data(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  }
  return v;
}

inline std::vector<float> Normal(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// ||a - b|| / ||b|| (0 when both are zero).
inline double RelNorm(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, n = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return n == 0 ? std::sqrt(e) : std::sqrt(e / n);
}

inline double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

inline double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (!(d <= m)) m = d;  // NaN wins
  }
  return m;
}

}  // namespace llmc::gpu_test
