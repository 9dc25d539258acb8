#include "engine/algo/inverse_hessian.h"

#include <f77blas.h>  // OpenBLAS's LAPACK entry points (dpotrf_, dpotri_, ...), implemented in C

#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/obs_common.h"

namespace llmc {
namespace {

// LAPACK on a column-major n x n matrix; H and its inverse are symmetric, so column-major M is the same matrix
// as the row-major H. Returns LAPACK's info.
template <typename T>
int Potrf(char uplo, int n, T* a) {
  blasint nn = n, lda = n, info = 0;
  if constexpr (std::is_same_v<T, double>) {
    dpotrf_(&uplo, &nn, a, &lda, &info);
  } else {
    spotrf_(&uplo, &nn, a, &lda, &info);
  }
  return static_cast<int>(info);
}

template <typename T>
int Potri(char uplo, int n, T* a) {
  blasint nn = n, lda = n, info = 0;
  if constexpr (std::is_same_v<T, double>) {
    dpotri_(&uplo, &nn, a, &lda, &info);
  } else {
    spotri_(&uplo, &nn, a, &lda, &info);
  }
  return static_cast<int>(info);
}

// Fills `a` (n x n of T, in raw storage) with H (optionally permuted), sets the dead columns' diagonal to 1, adds
// the dampening, and factors. On success, the column-major lower triangle of `a` (= the row-major upper triangle)
// holds U with (H + damp I)^-1 = U^T U. Returns "" or what failed.
template <typename T>
std::string Factor(const float* h, int64_t n, const int64_t* perm, const Dampening& dd, T* a) {
  for (int64_t i = 0; i < n; ++i) {
    const float* src = h + (perm ? perm[i] : i) * n;
    T* dst = a + i * n;
    if (perm) {
      for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(src[perm[j]]);
    } else {
      for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(src[j]);
    }
  }
  const T damp_t = static_cast<T>(dd.damp);
  for (int64_t i = 0; i < n; ++i) {
    if (dd.dead[i]) a[i * n + i] = T(1);
    a[i * n + i] += damp_t;
  }

  const int ni = static_cast<int>(n);
  int info = Potrf<T>('L', ni, a);
  if (info > 0)
    return absl::StrCat("the Cholesky factorization of the dampened Hessian failed at column ", info - 1, " of ", n,
                        " (not positive definite)");
  if (info < 0) return absl::StrCat("LAPACK potrf rejected argument ", -info);
  info = Potri<T>('L', ni, a);
  if (info > 0) return absl::StrCat("inverting the Cholesky factor failed at column ", info - 1, " of ", n);
  if (info < 0) return absl::StrCat("LAPACK potri rejected argument ", -info);
  info = Potrf<T>('L', ni, a);
  if (info > 0)
    return absl::StrCat("the Cholesky factorization of the inverse Hessian failed at column ", info - 1, " of ", n);
  if (info < 0) return absl::StrCat("LAPACK potrf rejected argument ", -info);
  for (int64_t i = 0; i < n; ++i) {
    const T d = a[i * n + i];
    if (!(d > T(0)) || !std::isfinite(static_cast<double>(d)))
      return absl::StrCat("the inverse-Hessian factor has a non-positive or non-finite diagonal at column ", i);
  }
  return "";
}

}  // namespace

absl::StatusOr<InverseHessianFactor> InverseHessianFactor::Compute(absl::string_view module, const float* hessian,
                                                                   int64_t cols, const int64_t* perm,
                                                                   double dampening_frac, bool double_precision) {
  if (cols <= 0 || cols > (int64_t{1} << 31) - 1)
    return absl::InvalidArgumentError(absl::StrCat(module, ": invalid Hessian size ", cols));
  if (hessian == nullptr) return absl::InvalidArgumentError(absl::StrCat(module, ": no Hessian"));
  LLMC_RETURN_IF_ERROR(CheckDampeningFrac(module, dampening_frac));
  const int64_t n = cols, nn = n * n;
  for (int64_t i = 0; i < nn; ++i)
    if (!std::isfinite(hessian[i])) return HessianNotFiniteError(module, i, n);

  InverseHessianFactor f;
  f.n_ = n;
  Dampening dd = DeadColumnsAndDamping(hessian, n + 1, n, perm, dampening_frac);
  const size_t elem = double_precision ? sizeof(double) : sizeof(float);
  f.buf_.reset(new unsigned char[static_cast<size_t>(nn) * elem]);
  if (double_precision) {
    double* a = reinterpret_cast<double*>(f.buf_.get());
    f.failure_ = Factor<double>(hessian, n, perm, dd, a);
    // fp64 -> fp32 in place: float k goes to bytes [4k, 4k+4), which only overlap doubles already read.
    unsigned char* bytes = f.buf_.get();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const int64_t k = i * n + j;
        double d;
        std::memcpy(&d, bytes + 8 * k, sizeof(d));
        float v = j >= i ? static_cast<float>(d) : 0.0f;
        std::memcpy(bytes + 4 * k, &v, sizeof(v));
      }
  } else {
    float* a = reinterpret_cast<float*>(f.buf_.get());
    f.failure_ = Factor<float>(hessian, n, perm, dd, a);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) a[i * n + j] = 0.0f;
  }
  f.num_dead_ = dd.num_dead;
  f.damp_ = dd.damp;
  f.dead_ = std::move(dd.dead);
  f.factored_ = f.failure_.empty();
  if (!f.factored_) {
    float* u = reinterpret_cast<float*>(f.buf_.get());
    std::memset(u, 0, static_cast<size_t>(nn) * sizeof(float));
    for (int64_t i = 0; i < n; ++i) u[i * n + i] = 1.0f;
  }
  return f;
}

}  // namespace llmc
