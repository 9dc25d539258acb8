// The blocked column walk of the Optimal Brain Surgeon solvers on the CPU (GPTQ's "lazy batch" update, which
// SparseGPT shares), written once for gptq.cc and sparsegpt.cc; what differs per solver is a policy:
//
//   for each block [i1, i2) of block_size columns (the last one narrower):
//     the block's columns are copied out transposed, blk[i][r] = W[r, i1 + i]; policy.StartBlock(i1, count, blk);
//     rows are split over threads (rows are independent); per column c = i1 + i, with d = U_cc:
//       policy.StartColumn(i, c, blk, r0, r1); quantize = policy.Column(i, c);
//       per row: q = quantize(x, r); row_loss[r] += (x - q)^2 / d^2; err = (x - q) / d; x = q;
//       the block's later columns j: W[r, j] -= err * U_cj (times policy.BlockKeep(j)[r] where that is non-null);
//     the block is copied back, and the trailing columns take W[:, i2:] -= Err^T U[i1:i2, i2:] in one sgemm (with
//     policy.masks_trailing(), the product lands in a buffer and policy.SubtractTrailing applies it row by row).
//
// The walk on the GPU (cuda_gptq.cc) runs the same per-block steps as kernels, over the same ForEachColumnBlock.
//
// A policy provides (all called from the walk's threads for disjoint row ranges, except StartBlock):
//   void StartBlock(int64_t i1, int64_t count, const float* blk);
//   void StartColumn(int64_t i, int64_t c, const float* blk, int64_t r0, int64_t r1);
//   auto Column(int64_t i, int64_t c);  // a callable float(float x, int64_t r): column c's quantized value of x
//                                       // in row r (it holds what the column needs, so the row loop stays tight)
//   const float* BlockKeep(int64_t j) const;  // [rows] for in-block column j, or null
//   bool masks_trailing() const;
//   void SubtractTrailing(int64_t r, int64_t i2, int64_t n, const float* product, float* w_row);
//     // w_row = W[r, i2:], product = (Err^T U[i1:i2, i2:])[r, :], both n long
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "engine/algo/obs_common.h"

namespace llmc {

// Runs fn(r0, r1) over [0, rows) split into `chunks` contiguous ranges (on `pool` when there is more than one).
template <typename Fn>
void ForRowChunks(ThreadPool* pool, int64_t rows, int chunks, Fn&& fn) {
  if (pool == nullptr || chunks <= 1) {
    fn(int64_t{0}, rows);
    return;
  }
  const int64_t step = (rows + chunks - 1) / chunks;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t r1 = std::min(rows, r0 + step);
    pool->Submit([&fn, r0, r1] { fn(r0, r1); });
  }
  pool->Wait();
}

// Walks every column of `w` [rows, cols] (row-major, solve order; updated in place) with the factor `u` [cols,
// cols] (row-major; its upper triangle is read) in blocks of `block_size` columns (1 to cols), on
// ColumnWalkThreads(num_threads, rows) threads (see the file comment). Returns each row's loss, sum over its
// columns of (x - q)^2 / U_cc^2.
template <typename Policy>
std::vector<double> WalkColumns(float* w, int64_t rows, int64_t cols, const float* u, int64_t block_size,
                                int num_threads, Policy* policy) {
  const int64_t B = block_size;
  const int threads = ColumnWalkThreads(num_threads, rows);
  std::unique_ptr<ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<ThreadPool>(threads);
  std::vector<float> blk(static_cast<size_t>(B * rows));  // [i][r]: column i1+i of the block, updated in place
  std::vector<float> err(static_cast<size_t>(B * rows));  // [i][r]: (w - q) / U_ii
  std::vector<float> trail;                               // [rows, cols - i2] product, masks_trailing only
  std::vector<double> row_loss(rows, 0.0);
  double* loss = row_loss.data();
  (void)ForEachColumnBlock(cols, B, [&](int64_t i1, int64_t count) {
    const int64_t i2 = i1 + count;
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = w + r * cols + i1;
      for (int64_t i = 0; i < count; ++i) blk[i * rows + r] = src[i];
    }
    policy->StartBlock(i1, count, blk.data());
    ForRowChunks(pool.get(), rows, threads, [&](int64_t r0, int64_t r1) {
      for (int64_t i = 0; i < count; ++i) {
        const int64_t c = i1 + i;
        const float d = u[c * cols + c];
        float* wc = blk.data() + i * rows;
        float* ec = err.data() + i * rows;
        policy->StartColumn(i, c, blk.data(), r0, r1);
        const auto quantize = policy->Column(i, c);
        for (int64_t r = r0; r < r1; ++r) {
          const float x = wc[r];
          const float q = quantize(x, r);
          const float diff = x - q;
          loss[r] += static_cast<double>(diff * diff / (d * d));
          ec[r] = diff / d;
          wc[r] = q;
        }
        const float* urow = u + c * cols + i1;
        for (int64_t j = i + 1; j < count; ++j) {
          const float h = urow[j];
          float* wj = blk.data() + j * rows;
          if (const float* kj = policy->BlockKeep(j)) {
            for (int64_t r = r0; r < r1; ++r) wj[r] -= (ec[r] * h) * kj[r];
          } else {
            for (int64_t r = r0; r < r1; ++r) wj[r] -= ec[r] * h;
          }
        }
      }
    });
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = w + r * cols + i1;
      for (int64_t i = 0; i < count; ++i) dst[i] = blk[i * rows + r];
    }
    if (i2 < cols) {
      const int64_t n = cols - i2;
      if (!policy->masks_trailing()) {
        // W[:, i2:] -= Err^T U[i1:i2, i2:]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(n),
                    static_cast<blasint>(count), -1.0f, err.data(), static_cast<blasint>(rows), u + i1 * cols + i2,
                    static_cast<blasint>(cols), 1.0f, w + i2, static_cast<blasint>(cols));
      } else {
        trail.resize(static_cast<size_t>(rows * n));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(n),
                    static_cast<blasint>(count), 1.0f, err.data(), static_cast<blasint>(rows), u + i1 * cols + i2,
                    static_cast<blasint>(cols), 0.0f, trail.data(), static_cast<blasint>(n));
        for (int64_t r = 0; r < rows; ++r) policy->SubtractTrailing(r, i2, n, trail.data() + r * n, w + r * cols + i2);
      }
    }
    return absl::OkStatus();
  });
  return row_loss;
}

}  // namespace llmc
