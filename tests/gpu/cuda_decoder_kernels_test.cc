// The CUDA decoder kernels against their CPU references (engine/model/cpu_ops.h), label `gpu` (skips visibly
// without a device). Named tolerances, each a bound the arithmetic guarantees rather than a measured value:
//   GEMM fp32        |y_gpu - y_cpu| <= 1e-6 * sum_k |x_k w_k| + 1e-30   (fp32 FMA, different summation order)
//   GEMM tf32        ... <= 2e-3 * sum_k |x_k w_k|                       (inputs rounded to 10-bit mantissas)
//   GEMM bf16        ... <= 1e-2 * sum_k |x_k w_k|                       (inputs rounded to 7-bit mantissas)
//   X^T X            |h_gpu - h_ref| <= 2e-5 * sum_t |x_ti x_tj| (+ the starting value's magnitude): fp32 sums of
//                    up to 2050 terms (measured 1.0e-6 on the diagonal of 1025 x 257 on an H200)
//   RoPE             bit-identical (both sides: two rounded products and a rounded sum, no FMA)
//   attention        |o_gpu - o_cpu| <= 2e-5 * (1 + |o_cpu|)                (expf vs FastExp, online softmax)
//   token NLL        |nll_gpu - nll_cpu| <= 1e-6 * (1 + |nll_cpu|)          (expf vs FastExp in the normalizer)
//   fp32 -> bf16     bit-identical with FloatToBF16 (round to nearest even, NaN stays NaN)
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/backend/cuda/attention_kernels.h"
#include "engine/backend/cuda/blas.h"
#include "engine/backend/cuda/model_kernels.h"
#include "engine/model/cpu_context.h"
#include "engine/model/cpu_ops.h"
#include "engine/tensor/dtype.h"
#include "tests/gpu/cuda_test_util.h"

namespace llmc {
namespace {

using gpu_test::Normal;
using gpu_test::ToDevice;
using gpu_test::ToHost;

class CudaDecoderKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LLMC_SKIP_WITHOUT_CUDA();
    ASSERT_EQ(blas_.Init(nullptr), "");
  }
  cuda::Blas blas_;
  CpuContext cpu_{4};
};

struct GemmCase {
  int64_t rows, in, out;
  bool bias;
};

TEST_F(CudaDecoderKernelsTest, LinearMatchesCpuInEveryPrecision) {
  const GemmCase cases[] = {{1, 1, 1, false},     {17, 64, 80, true},     {33, 1025, 17, false},
                            {257, 384, 1024, true}, {130, 4096, 1024, false}, {8, 8193, 3, true}};
  for (cuda::GemmPrecision p : {cuda::GemmPrecision::kFp32, cuda::GemmPrecision::kTf32, cuda::GemmPrecision::kBf16}) {
    const double tol = p == cuda::GemmPrecision::kFp32 ? 1e-6 : p == cuda::GemmPrecision::kTf32 ? 2e-3 : 1e-2;
    double worst_rel = 0;
    for (const GemmCase& c : cases) {
      SCOPED_TRACE(::testing::Message() << cuda::GemmPrecisionName(p) << " " << c.rows << "x" << c.in << " -> "
                                        << c.out);
      auto x = Normal(c.rows * c.in, 1.0f, 1);
      auto w = Normal(c.out * c.in, 0.05f, 2);
      auto b = c.bias ? Normal(c.out, 0.5f, 3) : std::vector<float>();
      std::vector<float> cpu(c.rows * c.out);
      LinearForward(x.data(), c.rows, c.in, w.data(), c.bias ? b.data() : nullptr, c.out, cpu.data(), &cpu_);
      auto dx = ToDevice(x);
      auto db = ToDevice(b);
      DeviceArray<float> dw32;
      DeviceArray<uint16_t> dw16, dxb;
      if (p == cuda::GemmPrecision::kBf16) {
        auto dwf = ToDevice(w);
        dw16 = ToDevice(std::vector<uint16_t>(w.size()));
        dxb = ToDevice(std::vector<uint16_t>(x.size()));
        ASSERT_EQ(cuda::FloatToBf16Device(dwf.data(), w.size(), dw16.data()), "");
        ASSERT_EQ(cuda::FloatToBf16Device(dx.data(), x.size(), dxb.data()), "");
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      } else {
        dw32 = ToDevice(w);
      }
      auto dy = ToDevice(std::vector<float>(c.rows * c.out, std::numeric_limits<float>::quiet_NaN()));
      const void* wp = p == cuda::GemmPrecision::kBf16 ? static_cast<const void*>(dw16.data()) : dw32.data();
      ASSERT_EQ(blas_.Linear(p, dx.data(), dxb.data(), c.rows, c.in, wp, c.bias ? db.data() : nullptr, c.out,
                             dy.data()),
                "");
      auto gpu = ToHost(dy, c.rows * c.out);
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t o = 0; o < c.out; ++o) {
          double mag = 0;
          for (int64_t k = 0; k < c.in; ++k) mag += std::fabs(double(x[r * c.in + k]) * w[o * c.in + k]);
          const int64_t i = r * c.out + o;
          ASSERT_LE(std::fabs(double(gpu[i]) - cpu[i]), tol * mag + 1e-30) << "at row " << r << " col " << o;
        }
      worst_rel = std::max(worst_rel, gpu_test::RelNorm(gpu, cpu));
    }
    std::printf("Linear %s: worst ||gpu - cpu|| / ||cpu|| = %.3g\n", cuda::GemmPrecisionName(p), worst_rel);
  }
}

TEST_F(CudaDecoderKernelsTest, AccumulateXtXMatchesNaiveSum) {
  for (auto [rows, in] : {std::pair<int64_t, int64_t>{1, 1}, {17, 33}, {300, 130}, {1025, 257}}) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << in);
    auto h0 = Normal(in * in, 1.0f, 7);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < i; ++j) h0[i * in + j] = h0[j * in + i];  // a symmetric start
    auto x1 = Normal(rows * in, 1.0f, 8), x2 = Normal(rows * in, 2.0f, 9);
    auto dh = ToDevice(h0);
    auto dx1 = ToDevice(x1), dx2 = ToDevice(x2);
    const float alpha = 0.5f;
    ASSERT_EQ(blas_.AccumulateXtX(dx1.data(), rows, in, alpha, dh.data()), "");
    ASSERT_EQ(blas_.AccumulateXtX(dx2.data(), rows, in, alpha, dh.data()), "");
    auto h = ToHost(dh, in * in);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < in; ++j) {
        double ref = h0[i * in + j], mag = std::fabs(ref);
        for (const auto* x : {&x1, &x2})
          for (int64_t t = 0; t < rows; ++t) {
            const double p = double((*x)[t * in + i]) * (*x)[t * in + j];
            ref += alpha * p;
            mag += alpha * std::fabs(p);
          }
        ASSERT_LE(std::fabs(h[i * in + j] - ref), 2e-5 * mag + 1e-30) << i << "," << j;
        ASSERT_EQ(h[i * in + j], h[j * in + i]) << "not symmetric at " << i << "," << j;
      }
  }
}

// bf16 Hessian products: x rounded to bf16 (in pieces of Blas::kXtXPieceElems; the last shape spans three
// pieces, the last one short), products accumulated in fp32. Against the double sum of the bf16-rounded inputs the
// GEMM's only error is its fp32 accumulation; against the fp32 inputs, the rounding's (~2^-8 per element).
TEST_F(CudaDecoderKernelsTest, AccumulateXtXBf16MatchesTheSumOfRoundedInputs) {
  const int64_t big_rows = 2 * cuda::Blas::kXtXPieceElems / 32 + 77;
  for (auto [rows, in] : {std::pair<int64_t, int64_t>{1, 1}, {17, 33}, {1025, 257}, {big_rows, 32}}) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << in);
    auto x = Normal(rows * in, 1.5f, 21);
    std::vector<float> h0(in * in, 0.0f);
    auto dh = ToDevice(h0);
    auto dx = ToDevice(x);
    const float alpha = 2.0f / static_cast<float>(rows);
    // The fp32 accumulation's error grows with the rows summed into one element: the 4M-row case (a diagonal of
    // squares, all of one sign) measured 6.1e-5 of sum|.| on an H100. The calibration passes at most 64K rows a call.
    const double tol = rows > 100000 ? 2e-4 : 1e-5;
    ASSERT_EQ(blas_.AccumulateXtX(dx.data(), rows, in, alpha, dh.data(), cuda::GemmPrecision::kBf16), "");
    auto h = ToHost(dh, in * in);
    std::vector<float> xr(x.size());
    for (size_t k = 0; k < x.size(); ++k) xr[k] = BF16ToFloat(FloatToBF16(x[k]));
    double worst_rounded = 0, worst_exact = 0;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double ref = 0, exact = 0, mag = 0;
        for (int64_t t = 0; t < rows; ++t) {
          ref += double(xr[t * in + i]) * xr[t * in + j];
          exact += double(x[t * in + i]) * x[t * in + j];
          mag += std::fabs(double(xr[t * in + i]) * xr[t * in + j]);
        }
        ref *= alpha, exact *= alpha, mag *= alpha;
        ASSERT_LE(std::fabs(h[i * in + j] - ref), tol * mag + 1e-30) << i << "," << j;
        worst_rounded = std::max(worst_rounded, std::fabs(h[i * in + j] - ref) / mag);
        worst_exact = std::max(worst_exact, std::fabs(h[i * in + j] - exact) / mag);
        ASSERT_EQ(h[i * in + j], h[j * in + i]) << "not symmetric at " << i << "," << j;
      }
    EXPECT_LT(worst_exact, 1e-2);
    std::printf("XtX bf16 %lldx%lld: worst |gpu - sum of rounded| / sum|.| = %.3g, against fp32 inputs %.3g\n",
                static_cast<long long>(rows), static_cast<long long>(in), worst_rounded, worst_exact);
  }
}

// Wider than Blas::kXtXTile: only the tiles on and below the diagonal are multiplied (the last tile ragged), the
// upper triangle mirrored. Every element, both triangles, against the double sum over a symmetric start, for the
// TF32 and bf16 tensor-core paths (inputs rounded as each path rounds them: bf16 exactly, TF32 within its 2^-11).
TEST_F(CudaDecoderKernelsTest, WideXtXOnLowerTilesMatchesTheFullSum) {
  const int64_t in = 2 * cuda::Blas::kXtXTile + 37, rows = 48;
  auto x = Normal(rows * in, 1.0f, 33);
  auto h0 = Normal(in * in, 0.5f, 34);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < i; ++j) h0[i * in + j] = h0[j * in + i];
  for (cuda::GemmPrecision p : {cuda::GemmPrecision::kTf32, cuda::GemmPrecision::kBf16}) {
    SCOPED_TRACE(cuda::GemmPrecisionName(p));
    std::vector<float> xr(x.size());
    for (size_t k = 0; k < x.size(); ++k)
      xr[k] = p == cuda::GemmPrecision::kBf16 ? BF16ToFloat(FloatToBF16(x[k])) : x[k];
    const double tol = p == cuda::GemmPrecision::kBf16 ? 1e-5 : 2e-3;  // TF32 rounds the inputs inside the GEMM
    auto dh = ToDevice(h0);
    auto dx = ToDevice(x);
    const float alpha = 0.25f;
    ASSERT_EQ(blas_.AccumulateXtX(dx.data(), rows, in, alpha, dh.data(), p), "");
    auto h = ToHost(dh, in * in);
    double worst = 0;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double ref = h0[i * in + j], mag = std::fabs(ref);
        for (int64_t t = 0; t < rows; ++t) {
          const double q = double(xr[t * in + i]) * xr[t * in + j];
          ref += alpha * q;
          mag += alpha * std::fabs(q);
        }
        ASSERT_LE(std::fabs(h[i * in + j] - ref), tol * mag + 1e-30) << i << "," << j;
        ASSERT_EQ(h[i * in + j], h[j * in + i]) << "not symmetric at " << i << "," << j;
        worst = std::max(worst, std::fabs(h[i * in + j] - ref) / mag);
      }
    std::printf("XtX %s %lldx%lld on lower tiles: worst |gpu - sum| / sum|.| = %.3g\n", cuda::GemmPrecisionName(p),
                static_cast<long long>(rows), static_cast<long long>(in), worst);
  }
  // As the calibration accumulates: the bf16 copy the block runner made passed in (x not read) and the mirror
  // deferred to one MirrorLower after two calls. The same bits as two calls of the converting, mirroring path.
  std::vector<uint16_t> xb(x.size());
  for (size_t k = 0; k < x.size(); ++k) xb[k] = FloatToBF16(x[k]);
  auto dx = ToDevice(x);
  auto dxb = ToDevice(xb);
  auto dref = ToDevice(h0), dh = ToDevice(h0);
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_EQ(blas_.AccumulateXtX(dx.data(), rows, in, 0.25f, dref.data(), cuda::GemmPrecision::kBf16), "");
    ASSERT_EQ(blas_.AccumulateXtX(nullptr, rows, in, 0.25f, dh.data(), cuda::GemmPrecision::kBf16, dxb.data(),
                                  /*mirror=*/false),
              "");
  }
  auto ref = ToHost(dref, in * in), deferred = ToHost(dh, in * in);
  int64_t stale = 0;
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) {
      // Row-major i, j is column-major (j, i): the lower triangle is j >= i here.
      if (j >= i) {
        ASSERT_EQ(deferred[i * in + j], ref[i * in + j]) << "lower triangle at " << j << "," << i;
      } else {
        stale += deferred[i * in + j] != ref[i * in + j];
      }
    }
  EXPECT_GT(stale, 0) << "the upper triangle was mirrored although mirror was false";
  ASSERT_EQ(blas_.MirrorLower(dh.data(), in), "");
  deferred = ToHost(dh, in * in);
  for (int64_t k = 0; k < in * in; ++k) ASSERT_EQ(deferred[k], ref[k]) << "after MirrorLower at " << k;
}

TEST_F(CudaDecoderKernelsTest, RopeIsBitIdenticalToCpu) {
  RopeSpec def;
  RopeSpec lin;
  lin.type = RopeSpec::Type::kLinear;
  lin.factor = 4.0;
  RopeSpec l3;
  l3.type = RopeSpec::Type::kLlama3;
  l3.theta = 500000.0;
  l3.factor = 8.0;
  l3.original_max_position_embeddings = 64;
  struct Case {
    RopeSpec rope;
    int64_t seqs, T, heads, hd;
  };
  const Case cases[] = {{def, 1, 1, 1, 2}, {def, 2, 17, 4, 16}, {lin, 3, 33, 2, 64}, {l3, 1, 2048, 8, 128},
                        {l3, 2, 300, 3, 80}, {def, 1, 4097, 1, 256}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.seqs << "x" << c.T << " heads " << c.heads << " head_dim " << c.hd);
    RopeTable table(c.rope, c.hd, c.T + 5);
    auto x = Normal(c.seqs * c.T * c.heads * c.hd, 2.0f, 11);
    auto dx = ToDevice(x);
    std::vector<float> cos_t(table.cos(0), table.cos(0) + (c.T + 5) * (c.hd / 2));
    std::vector<float> sin_t(table.sin(0), table.sin(0) + (c.T + 5) * (c.hd / 2));
    auto dc = ToDevice(cos_t), ds = ToDevice(sin_t);
    ASSERT_EQ(cuda::RopeDevice(dx.data(), c.seqs, c.T, c.heads, c.hd, dc.data(), ds.data()), "");
    ApplyRotary(x.data(), c.seqs, c.T, c.heads, table, &cpu_);
    auto gpu = ToHost(dx, x.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(gpu[i], x[i]) << "at " << i;
  }
}

// Partial rotary (Phi-4-mini: 12 of 16 dimensions) with longrope's scaled tables, short and long factors.
TEST_F(CudaDecoderKernelsTest, PartialRotaryLongropeIsBitIdenticalToCpu) {
  RopeSpec lr;
  lr.type = RopeSpec::Type::kLongrope;
  lr.original_max_position_embeddings = 32;
  lr.attention_factor = 1.3416;
  for (int i = 0; i < 6; ++i) {
    lr.short_factor.push_back(1.0 + 0.1 * i);
    lr.long_factor.push_back(1.0 + 0.5 * i);
  }
  for (int64_t T : {24, 40}) {
    const int64_t seqs = 2, heads = 3, hd = 16, rot = 12;
    RopeTable table(lr, rot, T);
    EXPECT_EQ(table.long_factors(), T > 32);
    auto x = Normal(seqs * T * heads * hd, 2.0f, 12);
    auto dx = ToDevice(x);
    std::vector<float> cos_t(table.cos(0), table.cos(0) + T * (rot / 2));
    std::vector<float> sin_t(table.sin(0), table.sin(0) + T * (rot / 2));
    auto dc = ToDevice(cos_t), ds = ToDevice(sin_t);
    ASSERT_EQ(cuda::RopeDevice(dx.data(), seqs, T, heads, hd, dc.data(), ds.data(), nullptr, rot), "");
    std::vector<float> before = x;
    ApplyRotary(x.data(), seqs, T, heads, table, &cpu_, hd);
    auto gpu = ToHost(dx, x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(gpu[i], x[i]) << "at " << i;
      if (i % hd >= static_cast<size_t>(rot)) {
        ASSERT_EQ(x[i], before[i]) << "pass-through dimension " << i;
      }
    }
  }
}

struct AttnCase {
  int64_t seqs, T, heads, kv_heads, hd, window;
};

TEST_F(CudaDecoderKernelsTest, AttentionMatchesCpu) {
  const AttnCase cases[] = {
      {1, 1, 2, 1, 64, 0},      {2, 17, 4, 2, 16, 0},     {3, 65, 6, 2, 64, 0},    {1, 130, 4, 1, 32, 8},
      {2, 300, 4, 4, 80, 0},    {1, 100, 2, 1, 256, 0},   {1, 2048, 8, 2, 128, 0}, {1, 2048, 4, 1, 128, 512},
      {2, 129, 8, 8, 128, 64},  {1, 2049, 2, 1, 64, 0},    {2, 70, 3, 1, 18, 0},  // 18: scalar loads
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.seqs << " seqs x " << c.T << ", heads " << c.heads << "/" << c.kv_heads
                                      << ", head_dim " << c.hd << ", window " << c.window);
    const int64_t n = c.seqs * c.T;
    // Sharp and flat score distributions: q scaled by 3 gives scores of a few units.
    auto q = Normal(n * c.heads * c.hd, 3.0f, 21), k = Normal(n * c.kv_heads * c.hd, 1.0f, 22),
         v = Normal(n * c.kv_heads * c.hd, 1.0f, 23);
    std::vector<float> cpu(q.size());
    CausalAttention(q.data(), k.data(), v.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window, cpu.data(),
                    &cpu_);
    auto dq = ToDevice(q), dk = ToDevice(k), dv = ToDevice(v);
    auto dout = ToDevice(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    ASSERT_EQ(cuda::CausalAttentionDevice(dq.data(), dk.data(), dv.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd,
                                          c.window, dout.data()),
              "");
    auto gpu = ToHost(dout, q.size());
    for (size_t i = 0; i < q.size(); ++i)
      ASSERT_LE(std::fabs(gpu[i] - cpu[i]), 2e-5 * (1 + std::fabs(cpu[i]))) << "at " << i;
    std::printf("attention %lldx%lld h%lld/%lld d%lld w%lld: max |gpu - cpu| = %.3g\n", (long long)c.seqs,
                (long long)c.T, (long long)c.heads, (long long)c.kv_heads, (long long)c.hd, (long long)c.window,
                gpu_test::MaxAbsDiff(gpu, cpu));
  }
}

// Gemma's attention: query_pre_attn_scalar's scale and score softcapping, with and without a window.
TEST_F(CudaDecoderKernelsTest, ScaledSoftcappedAttentionMatchesCpu) {
  const AttnCase cases[] = {{2, 40, 4, 2, 16, 8}, {1, 130, 8, 4, 256, 0}, {1, 300, 4, 2, 128, 64}};
  for (const AttnCase& c : cases) {
    for (auto [scale, softcap] : {std::pair{24.0f, 50.0f}, {256.0f, 0.0f}, {0.0f, 5.0f}}) {
      const float sc = scale > 0 ? 1.0f / std::sqrt(scale) : 0.0f;
      SCOPED_TRACE(::testing::Message() << c.T << " h" << c.heads << " d" << c.hd << " w" << c.window << " scale "
                                        << sc << " softcap " << softcap);
      const int64_t n = c.seqs * c.T;
      auto q = Normal(n * c.heads * c.hd, 3.0f, 31), k = Normal(n * c.kv_heads * c.hd, 1.0f, 32),
           v = Normal(n * c.kv_heads * c.hd, 1.0f, 33);
      std::vector<float> cpu(q.size());
      CausalAttention(q.data(), k.data(), v.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd, c.window, cpu.data(),
                      &cpu_, sc, softcap);
      auto dq = ToDevice(q), dk = ToDevice(k), dv = ToDevice(v);
      auto dout = ToDevice(std::vector<float>(q.size(), 0.0f));
      ASSERT_EQ(cuda::CausalAttentionDevice(dq.data(), dk.data(), dv.data(), c.seqs, c.T, c.heads, c.kv_heads, c.hd,
                                            c.window, dout.data(), nullptr, sc, softcap),
                "");
      auto gpu = ToHost(dout, q.size());
      for (size_t i = 0; i < q.size(); ++i)
        ASSERT_LE(std::fabs(gpu[i] - cpu[i]), 2e-5 * (1 + std::fabs(cpu[i]))) << "at " << i;
    }
  }
}

// GeGLU (gelu tanh) and logit softcapping: CUDA tanhf and the CPU's std::tanh differ by a few ulp.
TEST_F(CudaDecoderKernelsTest, GeluTanhGluAndSoftcapMatchCpu) {
  for (int64_t n : {1, 17, 1025, 9216 * 3 + 5}) {
    auto g = Normal(n, 4.0f, 41), u = Normal(n, 2.0f, 42);
    g[0] = 80.0f;  // saturation edges
    if (n > 1) g[1] = -80.0f;
    std::vector<float> cpu(n);
    GeluTanhGlu(g.data(), u.data(), n, cpu.data(), &cpu_);
    auto dg = ToDevice(g), du = ToDevice(u);
    ASSERT_EQ(cuda::GeluTanhGluDevice(dg.data(), du.data(), n, dg.data()), "");
    auto gpu = ToHost(dg, n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(gpu[i], cpu[i], 2e-6f * std::max(1.0f, std::fabs(cpu[i]))) << "gelu n=" << n << " at " << i;
    auto x = Normal(n, 40.0f, 43);
    std::vector<float> capped = x;
    Softcap(capped.data(), n, 30.0f, &cpu_);
    auto dx = ToDevice(x);
    ASSERT_EQ(cuda::SoftcapDevice(dx.data(), n, 30.0f), "");
    auto gx = ToHost(dx, n);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(gx[i], capped[i], 2e-6f * 30.0f) << "softcap n=" << n << " at " << i;
  }
  EXPECT_NE(cuda::SoftcapDevice(nullptr, 4, 0.0f), "");
}

// The tensor-core attention of the bf16 mode (Blas::CausalAttentionGemm) against the CPU reference: head_dim
// 64/128/256 and odd ones, GQA ratios 1 to 8, lengths that are no multiple of anything, sliding windows, Gemma's
// scale and softcap, and scratch buffers small enough to cut each sequence into chunks of query rows (3, 7, 64)
// or large enough for a whole sequence. TF32 products: ~1e-3 relative, so the bound is a norm, not bits.
TEST_F(CudaDecoderKernelsTest, TensorCoreAttentionMatchesCpu) {
  struct Case {
    AttnCase a;
    int64_t chunk_rows;  // scratch for this many query rows (0: whole sequences)
    float scale, softcap;
  };
  const Case cases[] = {
      {{1, 1, 2, 1, 64, 0}, 0, 0, 0},        {{2, 17, 4, 2, 16, 0}, 3, 0, 0},     {{3, 65, 6, 2, 64, 0}, 7, 0, 0},
      {{1, 130, 4, 1, 32, 8}, 7, 0, 0},      {{2, 300, 4, 4, 80, 0}, 64, 0, 0},   {{1, 100, 2, 1, 256, 0}, 0, 0, 0},
      {{1, 2048, 8, 2, 128, 0}, 0, 0, 0},    {{1, 2048, 4, 1, 128, 512}, 300, 0, 0},
      {{2, 129, 8, 8, 128, 64}, 64, 0, 0},   {{1, 2049, 16, 2, 64, 0}, 1000, 0, 0},
      {{2, 70, 3, 1, 18, 0}, 0, 0, 0},       {{1, 300, 4, 2, 128, 64}, 64, 1.0f / 16, 50.0f},
      {{1, 130, 8, 4, 256, 0}, 0, 0, 5.0f},
  };
  for (const Case& c : cases) {
    const AttnCase& a = c.a;
    SCOPED_TRACE(::testing::Message() << a.seqs << " seqs x " << a.T << ", heads " << a.heads << "/" << a.kv_heads
                                      << ", head_dim " << a.hd << ", window " << a.window << ", chunk "
                                      << c.chunk_rows << ", softcap " << c.softcap);
    const int64_t n = a.seqs * a.T;
    auto q = Normal(n * a.heads * a.hd, 3.0f, 41), k = Normal(n * a.kv_heads * a.hd, 1.0f, 42),
         v = Normal(n * a.kv_heads * a.hd, 1.0f, 43);
    std::vector<float> cpu(q.size());
    CausalAttention(q.data(), k.data(), v.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd, a.window, cpu.data(), &cpu_,
                    c.scale, c.softcap);
    const int64_t scratch = a.heads * a.T * (c.chunk_rows > 0 ? c.chunk_rows : a.T);
    EXPECT_EQ(cuda::Blas::AttentionChunkRows(a.T, a.heads, scratch), c.chunk_rows > 0 ? std::min(c.chunk_rows, a.T) : a.T);
    auto dq = ToDevice(q), dk = ToDevice(k), dv = ToDevice(v);
    auto ds = ToDevice(std::vector<float>(scratch, std::numeric_limits<float>::quiet_NaN()));
    auto dout = ToDevice(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    ASSERT_EQ(blas_.CausalAttentionGemm(dq.data(), dk.data(), dv.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd,
                                        a.window, c.scale, c.softcap, ds.data(), scratch, dout.data()),
              "");
    auto gpu = ToHost(dout, q.size());
    for (size_t i = 0; i < q.size(); ++i)
      ASSERT_LE(std::fabs(gpu[i] - cpu[i]), 3e-2 * (1 + std::fabs(cpu[i]))) << "at " << i;
    const double rel = gpu_test::RelNorm(gpu, cpu);
    EXPECT_LT(rel, 4e-3);
    std::printf("tensor-core attention %lldx%lld h%lld/%lld d%lld w%lld chunk %lld: ||gpu - cpu|| / ||cpu|| = %.3g, "
                "max |gpu - cpu| = %.3g\n",
                (long long)a.seqs, (long long)a.T, (long long)a.heads, (long long)a.kv_heads, (long long)a.hd,
                (long long)a.window, (long long)c.chunk_rows, rel, gpu_test::MaxAbsDiff(gpu, cpu));
  }
  // A scratch without room for one row of scores, and heads that are no multiple of the kv heads, are refused.
  EXPECT_NE(blas_.CausalAttentionGemm(nullptr, nullptr, nullptr, 1, 8, 4, 2, 64, 0, 0, 0, nullptr, 31, nullptr)
                .find("holds no row"),
            std::string::npos);
  EXPECT_NE(blas_.CausalAttentionGemm(nullptr, nullptr, nullptr, 1, 8, 3, 2, 64, 0, 0, 0, nullptr, 1 << 20, nullptr),
            "");
}

// The bf16 flash kernel of the bf16 mode (FlashAttentionBf16Device) against the CPU attention run on the same
// bf16 inputs (the kernel reads bf16 bits): the one rounding left is that of the probabilities
// before they multiply v (relative 2^-9 each), so |o_gpu - o_cpu| <= 2^-9 * max|v| plus fp32 summation noise.
// head_dim 64/128/256, GQA ratios 1 to 8, lengths that are no multiple of the 64-row or 32/64-key tiles, sliding
// windows (inside one tile and across several), Gemma's scale and softcap, Llama 4's attention chunks.
TEST_F(CudaDecoderKernelsTest, FlashBf16AttentionMatchesCpuOnRoundedInputs) {
  struct Case {
    AttnCase a;
    float scale, softcap;
    int64_t attn_chunk;
  };
  const Case cases[] = {
      {{1, 1, 2, 1, 64, 0}, 0, 0, 0},          {{2, 17, 4, 2, 128, 0}, 0, 0, 0},
      {{3, 65, 6, 2, 64, 0}, 0, 0, 0},         {{1, 130, 4, 1, 128, 8}, 0, 0, 0},
      {{2, 300, 8, 1, 128, 0}, 0, 0, 0},       {{1, 100, 2, 1, 256, 0}, 0, 0, 0},
      {{1, 2048, 8, 2, 128, 0}, 0, 0, 0},      {{1, 2049, 4, 1, 128, 512}, 0, 0, 0},
      {{2, 129, 8, 8, 128, 64}, 0, 0, 0},      {{1, 2049, 16, 2, 64, 0}, 0, 0, 0},
      {{1, 300, 4, 2, 128, 64}, 1.0f / 16, 50.0f, 0},  {{1, 130, 8, 4, 256, 0}, 0, 5.0f, 0},
      {{2, 257, 4, 4, 256, 100}, 1.0f / 16, 30.0f, 0}, {{1, 300, 4, 1, 128, 0}, 0, 0, 100},
      {{2, 129, 8, 8, 64, 0}, 0, 0, 7},        {{1, 2048, 8, 2, 128, 0}, 0, 0, 300},
  };
  for (const Case& c : cases) {
    const AttnCase& a = c.a;
    SCOPED_TRACE(::testing::Message() << a.seqs << " seqs x " << a.T << ", heads " << a.heads << "/" << a.kv_heads
                                      << ", head_dim " << a.hd << ", window " << a.window << ", scale " << c.scale
                                      << ", softcap " << c.softcap << ", attention chunk " << c.attn_chunk);
    ASSERT_TRUE(cuda::FlashAttentionBf16Supports(a.hd));
    const int64_t n = a.seqs * a.T;
    auto q = Normal(n * a.heads * a.hd, 3.0f, 91), k = Normal(n * a.kv_heads * a.hd, 1.0f, 92),
         v = Normal(n * a.kv_heads * a.hd, 1.0f, 93);
    float vmax = 0.0f;
    std::vector<uint16_t> qb(q.size()), kb(k.size()), vb(v.size());
    for (auto [x, b] : {std::pair{&q, &qb}, {&k, &kb}, {&v, &vb}})
      for (size_t i = 0; i < x->size(); ++i) {
        (*b)[i] = FloatToBF16((*x)[i]);
        (*x)[i] = BF16ToFloat((*b)[i]);
      }
    for (float e : v) vmax = std::max(vmax, std::fabs(e));
    std::vector<float> cpu(q.size());
    CausalAttention(q.data(), k.data(), v.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd, a.window, cpu.data(), &cpu_,
                    c.scale, c.softcap, c.attn_chunk);
    auto dq = ToDevice(qb), dk = ToDevice(kb), dv = ToDevice(vb);
    auto dout = ToDevice(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    ASSERT_EQ(cuda::FlashAttentionBf16Device(dq.data(), dk.data(), dv.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd,
                                             a.window, dout.data(), nullptr, c.scale, c.softcap, c.attn_chunk),
              "");
    auto gpu = ToHost(dout, q.size());
    const double bound = std::ldexp(1.0, -9) * vmax + 1e-4;
    for (size_t i = 0; i < q.size(); ++i) ASSERT_LE(std::fabs(gpu[i] - cpu[i]), bound) << "at " << i;
    const double rel = gpu_test::RelNorm(gpu, cpu);
    EXPECT_LT(rel, 1e-3);
    std::printf("bf16 flash attention %lldx%lld h%lld/%lld d%lld w%lld chunk %lld: ||gpu - cpu|| / ||cpu|| = %.3g, "
                "max |gpu - cpu| = %.3g (bound %.3g)\n",
                (long long)a.seqs, (long long)a.T, (long long)a.heads, (long long)a.kv_heads, (long long)a.hd,
                (long long)a.window, (long long)c.attn_chunk, rel, gpu_test::MaxAbsDiff(gpu, cpu), bound);
  }
  // Widths without a kernel, heads that are no multiple of the kv heads and negative windows are refused.
  EXPECT_FALSE(cuda::FlashAttentionBf16Supports(80));
  EXPECT_NE(cuda::FlashAttentionBf16Device(nullptr, nullptr, nullptr, 1, 8, 4, 2, 80, 0, nullptr).find("head_dim 80"),
            std::string::npos);
  EXPECT_NE(cuda::FlashAttentionBf16Device(nullptr, nullptr, nullptr, 1, 8, 3, 2, 64, 0, nullptr), "");
  EXPECT_NE(cuda::FlashAttentionBf16Device(nullptr, nullptr, nullptr, 1, 8, 4, 2, 64, -1, nullptr), "");
}

TEST_F(CudaDecoderKernelsTest, AttentionRejectsBadShapes) {
  EXPECT_NE(cuda::CausalAttentionDevice(nullptr, nullptr, nullptr, 1, 4, 3, 2, 64, 0, nullptr), "");
  EXPECT_NE(cuda::CausalAttentionDevice(nullptr, nullptr, nullptr, 1, 4, 2, 1, 512, 0, nullptr).find("256"),
            std::string::npos);
}

TEST_F(CudaDecoderKernelsTest, TokenNllMatchesCpu) {
  for (int64_t vocab : {1, 17, 8192, 128256}) {
    const int64_t rows = 5;
    auto logits = Normal(rows * vocab, 4.0f, 31);
    logits[0] = 60.0f;  // a dominant logit
    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 7919) % vocab);
    auto dl = ToDevice(logits);
    auto dt = ToDevice(targets);
    auto dn = ToDevice(std::vector<double>(rows));
    ASSERT_EQ(cuda::TokenNllDevice(dl.data(), rows, vocab, dt.data(), dn.data()), "");
    auto gpu = ToHost(dn, rows);
    for (int64_t r = 0; r < rows; ++r) {
      const double cpu = TokenNll(logits.data() + r * vocab, vocab, targets[r]);
      EXPECT_NEAR(gpu[r], cpu, 1e-6 * (1 + std::fabs(cpu))) << "vocab " << vocab << " row " << r;
    }
  }
}

TEST_F(CudaDecoderKernelsTest, FloatToBf16MatchesHostConversion) {
  std::vector<float> x = Normal(100003, 10.0f, 41);
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::denorm_min(), 1.00390625f /* tie */, 1.01171875f,
                            std::numeric_limits<float>::quiet_NaN()};
  for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); ++i) x[i] = specials[i];
  auto dx = ToDevice(x);
  auto db = ToDevice(std::vector<uint16_t>(x.size()));
  ASSERT_EQ(cuda::FloatToBf16Device(dx.data(), x.size(), db.data()), "");
  auto gpu = ToHost(db, x.size());
  // Unaligned pointers take the one-value-per-thread path.
  auto du = ToDevice(std::vector<uint16_t>(x.size()));
  ASSERT_EQ(cuda::FloatToBf16Device(dx.data() + 1, x.size() - 1, du.data() + 1), "");
  auto unaligned = ToHost(du, x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (i > 0) {
      ASSERT_EQ(unaligned[i], gpu[i]) << "unaligned, at " << i;
    }
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(BF16ToFloat(gpu[i])));
    } else {
      ASSERT_EQ(gpu[i], FloatToBF16(x[i])) << "at " << i << " (" << x[i] << ")";
    }
  }
}

// The norms and MLP activations that also write the bf16 copy a bf16 GEMM reads: the copy has the bits of
// FloatToBF16 of the fp32 output, the fp32 output is the same with or without it, and with `out` null the copy
// is the same.
TEST_F(CudaDecoderKernelsTest, NormsAndActivationsWriteTheirBf16CopyInTheSamePass) {
  struct Case {
    const char* what;
    int64_t rows, dim;
  };
  const Case cases[] = {{"norm, block per row", 37, 4096}, {"norm, warp per row", 129, 128}, {"norm, odd", 3, 1025},
                        {"swiglu", 1, 14336 * 3 + 5}, {"gelu", 1, 4099}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const int64_t n = c.rows * c.dim;
    auto x = Normal(n, 3.0f, 51);
    auto y = Normal(n, 2.0f, 52);
    auto wt = Normal(c.dim, 1.0f, 53);
    x[0] = std::numeric_limits<float>::quiet_NaN();  // NaN stays NaN in both copies
    auto dx = ToDevice(x), dy = ToDevice(y), dw = ToDevice(wt);
    auto ref = ToDevice(std::vector<float>(n)), both = ToDevice(std::vector<float>(n));
    auto b_both = ToDevice(std::vector<uint16_t>(n)), b_only = ToDevice(std::vector<uint16_t>(n));
    const std::string w = c.what;
    const bool norm = w.rfind("norm", 0) == 0;
    // `off` > 0 (activations): every pointer moved by that many values, so the kernel takes its unaligned path.
    auto run = [&](float* out, uint16_t* out_bf16, int64_t off = 0) {
      if (norm) return cuda::RmsNormDevice(dx.data(), c.rows, c.dim, dw.data(), 1e-5f, out, nullptr, out_bf16);
      const float *g = dx.data() + off, *u = dy.data() + off;
      if (w == "swiglu") return cuda::SwiGluDevice(g, u, n - off, out, nullptr, out_bf16);
      return cuda::GeluTanhGluDevice(g, u, n - off, out, nullptr, out_bf16);
    };
    ASSERT_EQ(run(ref.data(), nullptr), "");
    ASSERT_EQ(run(both.data(), b_both.data()), "");
    ASSERT_EQ(run(nullptr, b_only.data()), "");
    EXPECT_NE(run(nullptr, nullptr), "");  // no output at all is refused
    const auto r = ToHost(ref, n), f = ToHost(both, n);
    const auto bb = ToHost(b_both, n), bo = ToHost(b_only, n);
    ASSERT_EQ(std::memcmp(r.data(), f.data(), n * sizeof(float)), 0) << "fp32 output changed by the bf16 copy";
    int64_t nans = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(bb[i], bo[i]) << "at " << i;
      if (std::isnan(r[i])) {
        ++nans;
        EXPECT_TRUE(std::isnan(BF16ToFloat(bb[i]))) << "at " << i;
      } else {
        ASSERT_EQ(bb[i], FloatToBF16(r[i])) << "at " << i << " (" << r[i] << ")";
      }
    }
    EXPECT_GE(nans, 1);
    if (norm) continue;
    // The unaligned path (one value per thread) gives the aligned path's bits (four values per thread).
    auto un = ToDevice(std::vector<float>(n));
    auto unb = ToDevice(std::vector<uint16_t>(n));
    ASSERT_EQ(run(un.data() + 1, unb.data() + 1, 1), "");
    const auto uf = ToHost(un, n);
    const auto ub = ToHost(unb, n);
    ASSERT_EQ(std::memcmp(uf.data() + 1, r.data() + 1, (n - 1) * sizeof(float)), 0) << "unaligned fp32";
    ASSERT_EQ(std::memcmp(ub.data() + 1, bb.data() + 1, (n - 1) * sizeof(uint16_t)), 0) << "unaligned bf16";
  }
}

TEST_F(CudaDecoderKernelsTest, ResidualAndBiasAddsMatchCpu) {
  const int64_t rows = 37, cols = 1025;
  auto x = Normal(rows * cols, 1.0f, 51), y = Normal(rows * cols, 1.0f, 52), b = Normal(cols, 1.0f, 53);
  auto dx = ToDevice(x), dy = ToDevice(y), db = ToDevice(b);
  ASSERT_EQ(cuda::AddDevice(dx.data(), dy.data(), rows * cols), "");
  ASSERT_EQ(cuda::AddBiasDevice(dx.data(), rows, cols, db.data()), "");
  auto gpu = ToHost(dx, rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(gpu[i], (x[i] + y[i]) + b[i % cols]) << i;
}

// MoE dispatch: gathering an expert's tokens and adding its weighted outputs back, bit for bit with the CPU.
TEST_F(CudaDecoderKernelsTest, MoeGatherAndScatterMatchCpu) {
  const int64_t rows = 37, cols = 1025, n = 17;
  auto x = Normal(rows * cols, 1.0f, 61), out = Normal(rows * cols, 1.0f, 62), scales = Normal(n, 1.0f, 63);
  std::vector<int32_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>((i * 11 + 3) % rows);  // distinct rows
  auto dx = ToDevice(x), dout = ToDevice(out), ds = ToDevice(scales);
  auto didx = ToDevice(idx);
  auto dg = ToDevice(std::vector<float>(n * cols, 0.0f));
  ASSERT_EQ(cuda::GatherRowsDevice(dx.data(), didx.data(), n, cols, dg.data()), "");
  std::vector<float> g(n * cols);
  GatherRows(x.data(), idx.data(), n, cols, g.data());
  EXPECT_EQ(ToHost(dg, n * cols), g);
  // Scatter from the gathered rows (routed experts) and from the full rows (every expert on every token).
  for (bool from_full : {false, true}) {
    auto dref = ToDevice(out);
    std::vector<float> ref = out;
    const float* src = from_full ? x.data() : g.data();
    const float* dsrc = from_full ? dx.data() : dg.data();
    ScatterAddScaledRows(src, from_full ? idx.data() : nullptr, idx.data(), scales.data(), n, cols, ref.data());
    ASSERT_EQ(cuda::ScatterAddScaledRowsDevice(dsrc, from_full ? didx.data() : nullptr, didx.data(), ds.data(), n,
                                               cols, dref.data()),
              "");
    EXPECT_EQ(ToHost(dref, rows * cols), ref) << "from_full " << from_full;
  }
  EXPECT_NE(cuda::GatherRowsDevice(dx.data(), didx.data(), -1, cols, dg.data()), "");
}

// Llama 4: interleaved rotary pairs (bit-identical to the CPU), the per-position query temperature and the scaled
// gather of routed expert inputs (bit-identical), chunked attention in the flash kernel and the tensor-core path.
TEST_F(CudaDecoderKernelsTest, Llama4KernelsMatchCpu) {
  RopeSpec def;
  def.theta = 500000.0;
  for (const auto& [seqs, T, heads, hd] : std::vector<std::array<int64_t, 4>>{{2, 17, 4, 16}, {1, 300, 3, 128}}) {
    RopeTable table(def, hd, T);
    auto x = Normal(seqs * T * heads * hd, 2.0f, 71);
    auto dx = ToDevice(x);
    const int64_t n = T * (hd / 2);
    std::vector<float> cos_t(table.cos(0), table.cos(0) + n), sin_t(table.sin(0), table.sin(0) + n);
    auto dc = ToDevice(cos_t), ds = ToDevice(sin_t);
    ASSERT_EQ(cuda::RopeDevice(dx.data(), seqs, T, heads, hd, dc.data(), ds.data(), nullptr, 0, true), "");
    ApplyRotary(x.data(), seqs, T, heads, table, &cpu_, 0, /*interleaved=*/true);
    EXPECT_EQ(ToHost(dx, x.size()), x) << T;
  }
  EXPECT_NE(cuda::RopeDevice(nullptr, 1, 4, 2, 16, nullptr, nullptr, nullptr, 8, true), "");  // partial + interleaved
  {
    const int64_t rows = 45, cols = 24, T = 15;
    auto x = Normal(rows * cols, 1.0f, 72), t = Normal(T, 1.0f, 73);
    auto dx = ToDevice(x), dt = ToDevice(t);
    ASSERT_EQ(cuda::ScaleRowsPeriodicDevice(dx.data(), rows, cols, dt.data(), T), "");
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) x[r * cols + c] *= t[r % T];
    EXPECT_EQ(ToHost(dx, x.size()), x);
  }
  {
    const int64_t rows = 37, cols = 65, n = 9;
    auto x = Normal(rows * cols, 1.0f, 74), w = Normal(n, 1.0f, 75);
    std::vector<int32_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>((i * 7 + 2) % rows);
    auto dx = ToDevice(x), dw = ToDevice(w);
    auto didx = ToDevice(idx);
    auto dg = ToDevice(std::vector<float>(n * cols, 0.0f));
    ASSERT_EQ(cuda::GatherRowsDevice(dx.data(), didx.data(), n, cols, dg.data(), nullptr, dw.data()), "");
    std::vector<float> g(n * cols);
    GatherRows(x.data(), idx.data(), n, cols, g.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < cols; ++c) g[i * cols + c] *= w[i];  // as moe.cc scales the gathered rows
    EXPECT_EQ(ToHost(dg, n * cols), g);
  }
  struct Case {
    AttnCase a;
    int64_t attn_chunk, chunk_rows;
  };
  const Case cases[] = {{{2, 70, 4, 2, 64, 0}, 16, 0},   {{1, 300, 4, 1, 128, 0}, 64, 100},
                        {{2, 129, 8, 8, 128, 0}, 8, 7},  {{1, 200, 2, 1, 32, 20}, 64, 33},
                        {{1, 50, 2, 2, 16, 0}, 1, 0},    {{1, 2048, 8, 2, 128, 0}, 512, 300}};
  for (const Case& c : cases) {
    const AttnCase& a = c.a;
    SCOPED_TRACE(::testing::Message() << a.seqs << " seqs x " << a.T << ", heads " << a.heads << "/" << a.kv_heads
                                      << ", head_dim " << a.hd << ", window " << a.window << ", attention chunk "
                                      << c.attn_chunk << ", rows " << c.chunk_rows);
    const int64_t n = a.seqs * a.T;
    auto q = Normal(n * a.heads * a.hd, 3.0f, 76), k = Normal(n * a.kv_heads * a.hd, 1.0f, 77),
         v = Normal(n * a.kv_heads * a.hd, 1.0f, 78);
    std::vector<float> cpu(q.size());
    CausalAttention(q.data(), k.data(), v.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd, a.window, cpu.data(), &cpu_,
                    0.0f, 0.0f, c.attn_chunk);
    auto dq = ToDevice(q), dk = ToDevice(k), dv = ToDevice(v);
    auto dout = ToDevice(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    ASSERT_EQ(cuda::CausalAttentionDevice(dq.data(), dk.data(), dv.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd,
                                          a.window, dout.data(), nullptr, 0.0f, 0.0f, c.attn_chunk),
              "");
    auto gpu = ToHost(dout, q.size());
    for (size_t i = 0; i < q.size(); ++i)
      ASSERT_LE(std::fabs(gpu[i] - cpu[i]), 2e-5 * (1 + std::fabs(cpu[i]))) << "flash, at " << i;
    const int64_t scratch = a.heads * a.T * (c.chunk_rows > 0 ? c.chunk_rows : a.T);
    auto dsc = ToDevice(std::vector<float>(scratch, std::numeric_limits<float>::quiet_NaN()));
    auto dout2 = ToDevice(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    ASSERT_EQ(blas_.CausalAttentionGemm(dq.data(), dk.data(), dv.data(), a.seqs, a.T, a.heads, a.kv_heads, a.hd,
                                        a.window, 0.0f, 0.0f, dsc.data(), scratch, dout2.data(), c.attn_chunk),
              "");
    auto gemm = ToHost(dout2, q.size());
    for (size_t i = 0; i < q.size(); ++i)
      ASSERT_LE(std::fabs(gemm[i] - cpu[i]), 3e-2 * (1 + std::fabs(cpu[i]))) << "tensor cores, at " << i;
    EXPECT_LT(gpu_test::RelNorm(gemm, cpu), 4e-3);
    std::printf("chunked attention %lldx%lld chunk %lld: flash max |gpu - cpu| %.3g, tensor-core rel %.3g\n",
                (long long)a.seqs, (long long)a.T, (long long)c.attn_chunk, gpu_test::MaxAbsDiff(gpu, cpu),
                gpu_test::RelNorm(gemm, cpu));
  }
  EXPECT_NE(cuda::CausalAttentionDevice(nullptr, nullptr, nullptr, 1, 4, 2, 1, 64, 0, nullptr, nullptr, 0, 0, -1), "");
}

}  // namespace
}  // namespace llmc
