// The few BLAS/LAPACK routines the ICA core needs, from OpenBLAS as packaged by the PyPI wheel
// scipy-openblas32 (32-bit integers, symbols prefixed "scipy_"), and typed row-major wrappers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
// CBLAS: order 101 = row-major; transpose 111 = no, 112 = yes; uplo 121 = upper.
void scipy_cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda,
                       const float* b, int ldb, float beta, float* c, int ldc);
void scipy_cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha, const double* a, int lda,
                       const double* b, int ldb, double beta, double* c, int ldc);
void scipy_cblas_ssyrk(int order, int uplo, int trans, int n, int k, float alpha, const float* a, int lda,
                       float beta, float* c, int ldc);
void scipy_cblas_dsyrk(int order, int uplo, int trans, int n, int k, double alpha, const double* a, int lda,
                       double beta, double* c, int ldc);
// OpenBLAS's own thread count (its pthreads pool, separate from OpenMP's).
int scipy_openblas_get_num_threads(void);
void scipy_openblas_set_num_threads(int);
// LAPACK (column-major, Fortran calling convention; hidden string lengths last).
void scipy_ssyevd_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w, float* work,
                   const int* lwork, int* iwork, const int* liwork, int* info, std::size_t, std::size_t);
void scipy_dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                   double* work, const int* lwork, int* iwork, const int* liwork, int* info, std::size_t,
                   std::size_t);
}

namespace ulcmod::blas {

inline int dim(int64_t v) {
    if (v > INT32_MAX) throw std::invalid_argument("matrix dimension exceeds 2^31-1 (32-bit BLAS)");
    return static_cast<int>(v);
}

// C (m x n) = alpha * op(A) * op(B) + beta * C, all row-major.
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    scipy_cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, dim(m), dim(n), dim(k), alpha, a, dim(lda), b,
                      dim(ldb), beta, c, dim(ldc));
}
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                 const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
    scipy_cblas_dgemm(101, ta ? 112 : 111, tb ? 112 : 111, dim(m), dim(n), dim(k), alpha, a, dim(lda), b,
                      dim(ldb), beta, c, dim(ldc));
}

// Caps OpenBLAS at `n` threads while alive, for BLAS calls made from inside OpenMP parallel
// regions: each OpenMP thread then runs its own single-threaded GEMMs instead of both pools
// fighting over the cores (what scikit-learn does with threadpoolctl). Process-wide, like it.
class ThreadLimit {
   public:
    explicit ThreadLimit(int n) : saved_(scipy_openblas_get_num_threads()) {
        if (saved_ != n) scipy_openblas_set_num_threads(n);
    }
    ~ThreadLimit() {
        if (scipy_openblas_get_num_threads() != saved_) scipy_openblas_set_num_threads(saved_);
    }
    ThreadLimit(const ThreadLimit&) = delete;
    ThreadLimit& operator=(const ThreadLimit&) = delete;

   private:
    int saved_;
};

// C (n x n, full) = op(A) op(A)^T with op(A) n x k; trans: C = A^T A for A (k x n). Row-major.
template <class T>
void gram(bool trans, int64_t n, int64_t k, const T* a, int64_t lda, T* c) {
    if constexpr (std::is_same_v<T, float>)
        scipy_cblas_ssyrk(101, 121, trans ? 112 : 111, dim(n), dim(k), 1.0f, a, dim(lda), 0.0f, c, dim(n));
    else
        scipy_cblas_dsyrk(101, 121, trans ? 112 : 111, dim(n), dim(k), 1.0, a, dim(lda), 0.0, c, dim(n));
    for (int64_t i = 0; i < n; ++i)  // mirror the upper triangle
        for (int64_t j = 0; j < i; ++j) c[i * n + j] = c[j * n + i];
}

// Eigen-decomposition of a symmetric n x n matrix: eigenvalues ascending in w; on return row i
// of `a` (row-major) is the eigenvector of w[i] (LAPACK's column-major columns, read as rows).
template <class T>
void syevd(int64_t n_, T* a, T* w) {
    const int n = dim(n_);
    int info = 0, lwork = -1, liwork = -1, iwork_query = 0;
    T work_query = 0;
    auto call = [&](T* work, const int* lw, int* iwork, const int* liw) {
        if constexpr (std::is_same_v<T, float>)
            scipy_ssyevd_("V", "U", &n, a, &n, w, work, lw, iwork, liw, &info, 1, 1);
        else
            scipy_dsyevd_("V", "U", &n, a, &n, w, work, lw, iwork, liw, &info, 1, 1);
    };
    call(&work_query, &lwork, &iwork_query, &liwork);
    lwork = static_cast<int>(work_query) + 1;
    liwork = iwork_query;
    std::vector<T> work(lwork);
    std::vector<int> iwork(liwork);
    call(work.data(), &lwork, iwork.data(), &liwork);
    if (info != 0) throw std::runtime_error("eigen-decomposition failed (LAPACK syevd info=" + std::to_string(info) + ")");
}

}  // namespace ulcmod::blas
