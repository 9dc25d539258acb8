// The inverse-Hessian factor shared by GPTQ and SparseGPT (the Optimal Brain Surgeon update of
// https://arxiv.org/abs/2203.07259, section 3.4), prepared exactly as llm-compressor's `quantize_weight` /
// `sparsify_weight` prepare it:
//   1. dead columns: every i with H_ii == 0 gets H_ii = 1 (the caller zeroes those weight columns);
//   2. dampening: damp = dampening_frac * mean(diag(H)) (after step 1) is added to the diagonal;
//   3. L = cholesky(H); Hinv = cholesky_inverse(L) = H^-1; U = cholesky(Hinv, upper=True), so Hinv = U^T U.
// When a factorization fails (H not positive definite even after dampening), the library's fallback is used:
// U = identity, which turns both solvers into round-to-nearest / magnitude-style updates without error
// propagation. The solver loops read only the upper triangle of U (row-major).
//
// Precision: the library factors in fp32; here fp64 is the default (LAPACK dpotrf/dpotri from OpenBLAS), which
// fails less often on ill-conditioned H and gives the same U up to fp32 rounding where fp32 succeeds. Memory:
// one buffer of cols^2 doubles (cols^2 floats with fp32), converted in place to the fp32 factor afterwards.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc {

class InverseHessianFactor {
 public:
  // From H [cols, cols] (row-major fp32, symmetric; not modified). When `perm` is non-null, the factor is of the
  // permuted Hessian H[perm][:, perm] (activation ordering); perm has cols entries. Fails (INVALID_ARGUMENT,
  // naming `module`) when H has a NaN or Inf, or dampening_frac is negative or not finite; a factorization failure
  // is not an error (see factored()).
  static absl::StatusOr<InverseHessianFactor> Compute(absl::string_view module, const float* hessian, int64_t cols,
                                                      const int64_t* perm, double dampening_frac,
                                                      bool double_precision = true);

  int64_t cols() const { return n_; }
  // U [cols, cols] row-major fp32: the upper triangle is the factor, the strict lower triangle is zero.
  const float* data() const { return reinterpret_cast<const float*>(buf_.get()); }
  float at(int64_t i, int64_t j) const { return data()[i * n_ + j]; }

  // false when H (dampened) was not positive definite and U is the identity (the library's RTN fallback).
  bool factored() const { return factored_; }
  // Which step failed, for the warning ("cholesky of H failed at column 17 of 4096").
  const std::string& failure() const { return failure_; }
  // The columns with H_ii == 0 (in the permuted order when perm was given), as 0/1 flags.
  const std::vector<uint8_t>& dead() const { return dead_; }
  int64_t num_dead() const { return num_dead_; }
  // The dampening added to the diagonal.
  double damp() const { return damp_; }

 private:
  InverseHessianFactor() = default;
  int64_t n_ = 0;
  std::unique_ptr<unsigned char[]> buf_;  // cols^2 floats at the start once computed (in-place from doubles)
  bool factored_ = false;
  std::string failure_;
  std::vector<uint8_t> dead_;
  int64_t num_dead_ = 0;
  double damp_ = 0;
};

}  // namespace llmc
