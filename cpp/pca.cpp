#include "pca.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "blas.hpp"
#include "isa.hpp"
#include "parallel.hpp"

namespace ulcmod {
namespace {

// Rows per block: the widened block (rows x M) fills about kBlockBytes, so it is still in L2 for
// the second GEMM, but has at least kMinBlockRows rows (each GEMM call then has work to amortise
// its packing of Y) unless that would take more than kMaxBlockBytes (very wide A).
// Chosen with benchmarks/bench_tables.py (PCA rows of results/tables.md).
constexpr int64_t kBlockBytes = int64_t{1} << 20;
constexpr int64_t kMinBlockRows = 64;
constexpr int64_t kMaxBlockBytes = int64_t{16} << 20;

int64_t block_rows(int64_t row_bytes) {
    const int64_t fill = kBlockBytes / row_bytes;
    return std::max<int64_t>({1, fill, std::min(kMinBlockRows, kMaxBlockBytes / row_bytes)});
}

template <class W>
void widen(const KernelSet& ks, const Matrix& A, const int64_t* rows, int64_t b0, int64_t b1, W* X, double* sums) {
    if constexpr (std::is_same_v<W, float>)
        ks.widen_rows_f32(A, rows, b0, b1, X, A.cols, sums);
    else
        ks.widen_rows_f64(A, rows, b0, b1, X, A.cols, sums);
}

template <class W>
PcaPass pass_typed(const Matrix& A, const int64_t* rows, int64_t n_rows, const double* Y, int64_t w, bool last) {
    const int64_t M = A.cols;
    const KernelSet& ks = kernels();
    std::vector<W> Yw(Y, Y + M * w);
    std::vector<double> y_sum(w, 0.0);
    for (int64_t j = 0; j < M; ++j)
        for (int64_t c = 0; c < w; ++c) y_sum[c] += Y[j * w + c];

    blas::dim(M);  // the GEMMs' sizes fit 32-bit BLAS (checked here, outside the parallel region)
    const int64_t block = block_rows(static_cast<int64_t>(sizeof(W)) * std::max<int64_t>(M, 1));
    const int64_t n_blocks = (n_rows + block - 1) / block;
    const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(max_threads(), n_blocks));

    // Per thread: partial sums, and the block buffers.
    struct Partial {
        std::vector<double> gram, y_next, mu_z;
        std::vector<W> X, Zw, XtZ;
        std::vector<double> mu, Z;
        int64_t bad = -1;
    };
    std::vector<Partial> parts(threads);
    for (Partial& p : parts) {
        p.gram.assign(w * w, 0.0);
        if (!last) p.y_next.assign(M * w, 0.0), p.mu_z.assign(w, 0.0), p.XtZ.resize(M * w);
        p.X.resize(block * M);
        p.Zw.resize(block * w);
        p.mu.resize(block);
        p.Z.resize(block * w);
    }

    blas::ThreadLimit one_blas_thread(1);
    // Thread t takes the blocks [t n_blocks / threads, (t + 1) n_blocks / threads): a fixed split.
    parallel_for(threads, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            Partial& p = parts[t];
            for (int64_t b = n_blocks * t / threads; b < n_blocks * (t + 1) / threads; ++b) {
                const int64_t r0 = b * block, r1 = std::min(n_rows, r0 + block), n = r1 - r0;
                widen(ks, A, rows, r0, r1, p.X.data(), p.mu.data());
                for (int64_t i = 0; i < n; ++i) {
                    p.mu[i] /= static_cast<double>(M);
                    if (p.bad < 0 && !std::isfinite(p.mu[i])) p.bad = r0 + i;
                }
                // Z = X Yw (in W) - mu y_sum^T (in double)
                blas::gemm(false, false, n, w, M, W(1), p.X.data(), M, Yw.data(), w, W(0), p.Zw.data(), w);
                for (int64_t i = 0; i < n; ++i)
                    for (int64_t c = 0; c < w; ++c)
                        p.Z[i * w + c] = static_cast<double>(p.Zw[i * w + c]) - p.mu[i] * y_sum[c];
                blas::gemm(true, false, w, w, n, 1.0, p.Z.data(), w, p.Z.data(), w, 1.0, p.gram.data(), w);
                if (last) continue;
                for (int64_t i = 0; i < n * w; ++i) p.Zw[i] = static_cast<W>(p.Z[i]);
                blas::gemm(true, false, M, w, n, W(1), p.X.data(), M, p.Zw.data(), w, W(0), p.XtZ.data(), w);
                for (int64_t i = 0; i < M * w; ++i) p.y_next[i] += static_cast<double>(p.XtZ[i]);
                for (int64_t i = 0; i < n; ++i)
                    for (int64_t c = 0; c < w; ++c) p.mu_z[c] += p.mu[i] * p.Z[i * w + c];
            }
        }
    });

    PcaPass out;
    out.gram.assign(w * w, 0.0);
    if (!last) out.y_next.assign(M * w, 0.0), out.mu_z.assign(w, 0.0);
    for (const Partial& p : parts) {  // thread order: deterministic for a given thread count
        for (int64_t i = 0; i < w * w; ++i) out.gram[i] += p.gram[i];
        for (int64_t i = 0; i < static_cast<int64_t>(out.y_next.size()); ++i) out.y_next[i] += p.y_next[i];
        for (int64_t i = 0; i < static_cast<int64_t>(out.mu_z.size()); ++i) out.mu_z[i] += p.mu_z[i];
        if (p.bad >= 0 && (out.first_nonfinite < 0 || p.bad < out.first_nonfinite)) out.first_nonfinite = p.bad;
    }
    return out;
}

}  // namespace

PcaPass pca_pass(const Matrix& A, const int64_t* rows, int64_t n_rows, const double* Y, int64_t width, bool last) {
    if (A.dtype == DType::F64) return pass_typed<double>(A, rows, n_rows, Y, width, last);
    return pass_typed<float>(A, rows, n_rows, Y, width, last);
}

}  // namespace ulcmod
