#include "pca.hpp"

#include <algorithm>
#include <cmath>

#include "common.hpp"
#include "cublas.hpp"
#include "elements.cuh"

namespace ulcmod::cuda {
namespace {

constexpr cudaStream_t kStream = 0;
// Rows per block: the widened block (float32) takes at most this many bytes.
constexpr int64_t kBlockBytes = int64_t{256} << 20;

template <class W>
__device__ __forceinline__ W widen(double v);
template <>
__device__ __forceinline__ float widen<float>(double v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ double widen<double>(double v) { return v; }

// X[i, c] = A[rows[i0 + i], c] in the working precision W (rows null: row i0 + i).
template <class T, class W>
__global__ void gather_rows_kernel(TypedView<T> A, const int64_t* __restrict__ rows, int64_t i0, int64_t nb,
                                   W* __restrict__ X) {
    const int64_t total = nb * A.cols;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t i = idx / A.cols, c = idx - i * A.cols;
        const int64_t r = rows ? rows[i0 + i] : i0 + i;
        X[idx] = widen<W>(to_double(A.data[r * A.rs + c * A.cs]));
    }
}

// mu[i] = mean of row i of X (nb x M), summed in float64; one warp per row.
template <class W>
__global__ void row_means_kernel(const W* __restrict__ X, int64_t nb, int64_t M, double* __restrict__ mu) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
    for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; i < nb; i += warps) {
        double s = 0.0;
        for (int64_t c = lane; c < M; c += 32) s += X[i * M + c];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) mu[i] = s / static_cast<double>(M);
    }
}

// Z = XY - mu y_sum^T in float64, and its copy Zw in the working precision.
template <class W>
__global__ void centre_kernel(const W* __restrict__ XY, const double* __restrict__ mu,
                              const double* __restrict__ y_sum, int64_t nb, int64_t w, double* __restrict__ Z,
                              W* __restrict__ Zw) {
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < nb * w;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t i = idx / w, j = idx - i * w;
        const double z = static_cast<double>(XY[idx]) - mu[i] * y_sum[j];
        Z[idx] = z;
        Zw[idx] = widen<W>(z);
    }
}

template <class W>
__global__ void accumulate_kernel(double* __restrict__ acc, const W* __restrict__ v, int64_t n) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        acc[i] += static_cast<double>(v[i]);
}

unsigned grid_for(int64_t n, int threads = 256) {
    return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535)));
}

// Column-major gemm (cuBLAS's convention): C (m x n) = alpha op(A) op(B) + beta C.
void gemm(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    const float one = 1.0f;
    ULCMOD_CUBLAS(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, int(m), int(n),
                              int(k), &one, A, int(lda), B, int(ldb), &beta, C, int(ldc)));
}
void gemm(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    const double one = 1.0;
    ULCMOD_CUBLAS(cublasDgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, int(m), int(n),
                              int(k), &one, A, int(lda), B, int(ldb), &beta, C, int(ldc)));
}

template <class T, class W>
PcaPass run(const TypedView<T>& A, const double* Y, int64_t w, bool last, const int64_t* rows, int64_t n_rows) {
    const int64_t M = A.cols;
    if (M >= INT32_MAX || w >= INT32_MAX) throw std::invalid_argument("matrix too large for cuBLAS");
    cublasHandle_t h = cublas_handle();
    ULCMOD_CUBLAS(cublasSetStream(h, kStream));
    const int64_t nb_max = std::max<int64_t>(1, std::min<int64_t>(n_rows, kBlockBytes / (static_cast<int64_t>(sizeof(W)) * M)));

    // Y in the working precision and its column sums (float64), as the host pass.
    std::vector<W> Yw(M * w);
    std::vector<double> y_sum(w, 0.0);
    for (int64_t c = 0; c < M; ++c)
        for (int64_t j = 0; j < w; ++j) {
            Yw[c * w + j] = static_cast<W>(Y[c * w + j]);
            y_sum[j] += Y[c * w + j];
        }
    DeviceBuffer<W> d_Yw, X(nb_max * M), XY(nb_max * w), Zw(nb_max * w), tmp(last ? 0 : M * w);
    DeviceBuffer<double> d_ysum, mu(nb_max), Z(nb_max * w), gram(w * w), y_next(last ? 0 : M * w), mu_z(w);
    DeviceBuffer<int64_t> d_rows;
    d_Yw.upload(Yw.data(), Yw.size(), kStream);
    d_ysum.upload(y_sum.data(), y_sum.size(), kStream);
    if (rows) d_rows.upload(rows, n_rows, kStream);
    ULCMOD_CUDA(cudaMemsetAsync(gram.data(), 0, w * w * sizeof(double), kStream));
    ULCMOD_CUDA(cudaMemsetAsync(mu_z.data(), 0, w * sizeof(double), kStream));
    if (!last) ULCMOD_CUDA(cudaMemsetAsync(y_next.data(), 0, M * w * sizeof(double), kStream));

    PcaPass out;
    std::vector<double> mu_host(nb_max);
    for (int64_t i0 = 0; i0 < n_rows; i0 += nb_max) {
        const int64_t nb = std::min(nb_max, n_rows - i0);
        gather_rows_kernel<T, W><<<grid_for(nb * M), 256, 0, kStream>>>(A, rows ? d_rows.data() : nullptr, i0, nb,
                                                                      X.data());
        ULCMOD_CUDA_LAUNCHED();
        row_means_kernel<W><<<grid_for(nb * 32), 256, 0, kStream>>>(X.data(), nb, M, mu.data());
        ULCMOD_CUDA_LAUNCHED();
        ULCMOD_CUDA(cudaMemcpyAsync(mu_host.data(), mu.data(), nb * sizeof(double), cudaMemcpyDeviceToHost, kStream));
        ULCMOD_CUDA(cudaStreamSynchronize(kStream));
        for (int64_t i = 0; i < nb; ++i)
            if (!std::isfinite(mu_host[i])) {
                out.bad = i0 + i;
                return out;
            }
        // XY (nb x w, row-major) = X Yw: column-major XY^T = Yw^T X^T.
        gemm(h, false, false, w, nb, M, d_Yw.data(), w, X.data(), M, W(0), XY.data(), w);
        centre_kernel<W><<<grid_for(nb * w), 256, 0, kStream>>>(XY.data(), mu.data(), d_ysum.data(), nb, w, Z.data(),
                                                               Zw.data());
        ULCMOD_CUDA_LAUNCHED();
        // gram += Z^T Z (symmetric).
        gemm(h, false, true, w, w, nb, Z.data(), w, Z.data(), w, 1.0, gram.data(), w);
        if (!last) {
            // tmp (M x w, row-major) = X^T Zw: column-major tmp^T = Zw^T X.
            gemm(h, false, true, w, M, nb, Zw.data(), w, X.data(), M, W(0), tmp.data(), w);
            accumulate_kernel<W><<<grid_for(M * w), 256, 0, kStream>>>(y_next.data(), tmp.data(), M * w);
            ULCMOD_CUDA_LAUNCHED();
            // mu_z += Z^T mu.
            const double one = 1.0;
            ULCMOD_CUBLAS(cublasDgemv(h, CUBLAS_OP_N, int(w), int(nb), &one, Z.data(), int(w), mu.data(), 1, &one,
                                      mu_z.data(), 1));
        }
    }
    out.gram.resize(w * w);
    ULCMOD_CUDA(cudaMemcpyAsync(out.gram.data(), gram.data(), w * w * sizeof(double), cudaMemcpyDeviceToHost, kStream));
    if (!last) {
        std::vector<double> mz(w);
        out.y_next.resize(M * w);
        ULCMOD_CUDA(cudaMemcpyAsync(out.y_next.data(), y_next.data(), M * w * sizeof(double), cudaMemcpyDeviceToHost,
                                    kStream));
        ULCMOD_CUDA(cudaMemcpyAsync(mz.data(), mu_z.data(), w * sizeof(double), cudaMemcpyDeviceToHost, kStream));
        ULCMOD_CUDA(cudaStreamSynchronize(kStream));
        for (int64_t c = 0; c < M; ++c)
            for (int64_t j = 0; j < w; ++j) out.y_next[c * w + j] -= mz[j];
    }
    ULCMOD_CUDA(cudaStreamSynchronize(kStream));
    return out;
}

}  // namespace

PcaPass pca_pass(const DeviceArray& A, const double* Y, int64_t w, bool last, const int64_t* rows, int64_t n_rows) {
    DeviceGuard guard(A.device);
    if (!rows) n_rows = A.view.rows;
    return dispatch_view(A.view, [&](const auto& tv) {
        using T = std::decay_t<decltype(*tv.data)>;
        if constexpr (std::is_same_v<T, double>)
            return run<T, double>(tv, Y, w, last, rows, n_rows);
        else
            return run<T, float>(tv, Y, w, last, rows, n_rows);
    });
}

}  // namespace ulcmod::cuda
