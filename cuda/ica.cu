#include "ica.hpp"

#include <algorithm>
#include <cmath>

#include "cublas.hpp"
#include "elements.cuh"

namespace ulcmod::cuda {
namespace {

constexpr cudaStream_t kStream = 0;
constexpr int kThreads = 256;
constexpr int64_t kContrastChunk = 8192;  // elements per partial sum of g' (a fixed order)

unsigned blocks_for(int64_t n) {
    return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)));
}

template <class T>
T* data_of(IcaMatrix& m);
template <>
float* data_of<float>(IcaMatrix& m) { return m.f.data(); }
template <>
double* data_of<double>(IcaMatrix& m) { return m.d.data(); }
template <class T>
const T* data_of(const IcaMatrix& m) { return data_of<T>(const_cast<IcaMatrix&>(m)); }

template <class T>
std::shared_ptr<IcaMatrix> make_matrix(int device, int64_t rows, int64_t cols) {
    auto m = std::make_shared<IcaMatrix>();
    m->device = device;
    m->rows = rows;
    m->cols = cols;
    m->f32 = std::is_same_v<T, float>;
    if (m->f32)
        m->f.resize(rows * cols);
    else
        m->d.resize(rows * cols);
    return m;
}

// Row-major products on cuBLAS (column-major): C = op(A) op(B) is C^T = op(B)^T op(A)^T.
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    ULCMOD_CUBLAS(cublasSgemm(cublas_handle(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
                              int(m), int(k), &alpha, B, int(ldb), A, int(lda), &beta, C, int(ldc)));
}
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* A, int64_t lda,
             const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    ULCMOD_CUBLAS(cublasDgemm(cublas_handle(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
                              int(m), int(k), &alpha, B, int(ldb), A, int(lda), &beta, C, int(ldc)));
}

// C (m x m, column-major upper triangle) = op(A) op(A)^T, A column-major with leading dimension lda.
void syrk(bool trans, int64_t m, int64_t k, const float* A, int64_t lda, float* C) {
    const float one = 1.0f, zero = 0.0f;
    ULCMOD_CUBLAS(cublasSsyrk(cublas_handle(), CUBLAS_FILL_MODE_UPPER, trans ? CUBLAS_OP_T : CUBLAS_OP_N, int(m),
                              int(k), &one, A, int(lda), &zero, C, int(m)));
}
void syrk(bool trans, int64_t m, int64_t k, const double* A, int64_t lda, double* C) {
    const double one = 1.0, zero = 0.0;
    ULCMOD_CUBLAS(cublasDsyrk(cublas_handle(), CUBLAS_FILL_MODE_UPPER, trans ? CUBLAS_OP_T : CUBLAS_OP_N, int(m),
                              int(k), &one, A, int(lda), &zero, C, int(m)));
}

template <class T>
__device__ __forceinline__ T narrow(double v) { return static_cast<T>(v); }

// out (rows x cols, row-major, precision T) = X, or X^T with `transpose`.
template <class S, class T>
__global__ void copy_kernel(TypedView<S> X, bool transpose, T* __restrict__ out) {
    const int64_t total = X.rows * X.cols;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t i, j;
        if (transpose) {  // out is cols x rows: idx = j * rows + i
            j = idx / X.rows;
            i = idx - j * X.rows;
        } else {
            i = idx / X.cols;
            j = idx - i * X.cols;
        }
        out[idx] = narrow<T>(to_double(X.data[i * X.rs + j * X.cs]));
    }
}

// partial[chunk, j] = sum of X[i, j] over the chunk's rows, in float64.
template <class T>
__global__ void column_sums_kernel(const T* __restrict__ X, int64_t n, int64_t p, int64_t rows_per_chunk,
                                   double* __restrict__ partial) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= p) return;
    const int64_t i0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk, i1 = min(n, i0 + rows_per_chunk);
    double s = 0.0;
    for (int64_t i = i0; i < i1; ++i) s += static_cast<double>(X[i * p + j]);
    partial[static_cast<int64_t>(blockIdx.y) * p + j] = s;
}

template <class T>
__global__ void centre_kernel(T* __restrict__ X, int64_t n, int64_t p, const T* __restrict__ mean) {
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n * p;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
        X[idx] -= mean[idx % p];
}

// Y (r x n) <- g(Y) in place; partial[row, chunk] = the chunk's sum of g'(Y), in float64. The
// contrast is computed in float64 as on the host (cpp/fastica.cpp), with CUDA's tanh and exp.
template <class T>
__global__ void __launch_bounds__(kThreads) contrast_kernel(T* __restrict__ Y, int64_t n, int fun, double alpha,
                                                            int64_t chunks, double* __restrict__ partial) {
    __shared__ double warp_sums[kThreads / 32];
    const int64_t row = blockIdx.y, c0 = static_cast<int64_t>(blockIdx.x) * kContrastChunk;
    const int64_t c1 = min(n, c0 + kContrastChunk);
    T* y = Y + row * n;
    double s = 0.0;
    for (int64_t i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
        const double x = static_cast<double>(y[i]);
        if (fun == static_cast<int>(Contrast::LogCosh)) {
            const double g = tanh(alpha * x);
            y[i] = static_cast<T>(g);
            s += alpha * (1.0 - g * g);
        } else if (fun == static_cast<int>(Contrast::Exp)) {
            const double x2 = x * x, e = exp(-0.5 * x2);
            y[i] = static_cast<T>(x * e);
            s += (1.0 - x2) * e;
        } else {
            y[i] = static_cast<T>(x * x * x);
            s += 3.0 * x * x;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < kThreads / 32; ++w) t += warp_sums[w];
        partial[row * chunks + blockIdx.x] = t;
    }
}

template <class T>
class DeviceWhitenSource final : public WhitenSource<T> {
public:
    explicit DeviceWhitenSource(const DeviceArray& X)
        : device_(X.device), n_(X.view.rows), p_(X.view.cols), Xc_(static_cast<size_t>(n_ * p_)) {
        dispatch_view(X.view, [&](const auto& tv) {
            using S = std::decay_t<decltype(*tv.data)>;
            copy_kernel<S, T><<<blocks_for(n_ * p_), kThreads, 0, kStream>>>(tv, false, Xc_.data());
            ULCMOD_CUDA_LAUNCHED();
        });
    }

    std::vector<double> column_sums() override {
        const int64_t rows_per_chunk = std::max<int64_t>(256, (n_ + 255) / 256);
        const int64_t chunks = (n_ + rows_per_chunk - 1) / rows_per_chunk;
        DeviceBuffer<double> partial(chunks * p_);
        const dim3 grid(static_cast<unsigned>((p_ + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
        column_sums_kernel<T><<<grid, kThreads, 0, kStream>>>(Xc_.data(), n_, p_, rows_per_chunk, partial.data());
        ULCMOD_CUDA_LAUNCHED();
        std::vector<double> h(chunks * p_), sums(p_, 0.0);
        ULCMOD_CUDA(cudaMemcpy(h.data(), partial.data(), h.size() * sizeof(double), cudaMemcpyDeviceToHost));
        for (int64_t c = 0; c < chunks; ++c)
            for (int64_t j = 0; j < p_; ++j) sums[j] += h[c * p_ + j];
        return sums;
    }

    void centre(const T* mean) override {
        DeviceBuffer<T> m;
        m.upload(mean, p_, kStream);
        centre_kernel<T><<<blocks_for(n_ * p_), kThreads, 0, kStream>>>(Xc_.data(), n_, p_, m.data());
        ULCMOD_CUDA_LAUNCHED();
        ULCMOD_CUDA(cudaStreamSynchronize(kStream));
    }

    void gram(bool scatter, T* E) override {
        const int64_t m = scatter ? p_ : n_;
        DeviceBuffer<T> d(m * m);
        // Xc row-major (n x p) is column-major p x n: scatter = Xc^T Xc = (p x n)(p x n)^T.
        syrk(!scatter, m, scatter ? n_ : p_, Xc_.data(), p_, d.data());
        ULCMOD_CUDA(cudaMemcpy(E, d.data(), m * m * sizeof(T), cudaMemcpyDeviceToHost));
        // The column-major upper triangle is the row-major lower one: mirror it.
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = i + 1; j < m; ++j) E[i * m + j] = E[j * m + i];
    }

    void project(const T* K, int64_t c, T alpha) override {
        DeviceBuffer<T> k;
        k.upload(K, c * p_, kStream);
        X1 = make_matrix<T>(device_, c, n_);
        gemm_rm(false, true, c, n_, p_, alpha, k.data(), p_, Xc_.data(), p_, T(0), data_of<T>(*X1), n_);
        ULCMOD_CUDA(cudaStreamSynchronize(kStream));
    }

    void combine(const T* A, int64_t c, T* K) override {
        DeviceBuffer<T> a, k(c * p_);
        a.upload(A, c * n_, kStream);
        gemm_rm(false, false, c, p_, n_, T(1), a.data(), n_, Xc_.data(), p_, T(0), k.data(), p_);
        ULCMOD_CUDA(cudaMemcpy(K, k.data(), c * p_ * sizeof(T), cudaMemcpyDeviceToHost));
    }

    void set_whitened(const T* X1_in, int64_t c) override {
        X1 = make_matrix<T>(device_, c, n_);
        ULCMOD_CUDA(cudaMemcpy(data_of<T>(*X1), X1_in, c * n_ * sizeof(T), cudaMemcpyHostToDevice));
    }

    std::shared_ptr<IcaMatrix> X1;

private:
    int device_;
    int64_t n_, p_;
    DeviceBuffer<T> Xc_;
};

template <class T>
class DeviceIcaData final : public IcaData<T> {
public:
    explicit DeviceIcaData(const IcaMatrix& X1) : X1_(X1) {}

    void step(const T* w, int64_t r, const IcaSettings& s, T* G, T* gp) override {
        const int64_t c = X1_.rows, n = X1_.cols;
        const int64_t chunks = (n + kContrastChunk - 1) / kContrastChunk;
        w_.upload(w, r * c, kStream);
        WX_.resize(r * n);
        G_.resize(r * c);
        partial_.resize(r * chunks);
        gemm_rm(false, false, r, n, c, T(1), w_.data(), c, data_of<T>(X1_), n, T(0), WX_.data(), n);
        contrast_kernel<T><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(r)), kThreads, 0, kStream>>>(
            WX_.data(), n, static_cast<int>(s.fun), s.alpha, chunks, partial_.data());
        ULCMOD_CUDA_LAUNCHED();
        gemm_rm(false, true, r, c, n, T(1) / static_cast<T>(n), WX_.data(), n, data_of<T>(X1_), n, T(0), G_.data(), c);
        std::vector<double> h(r * chunks);
        ULCMOD_CUDA(cudaMemcpy(h.data(), partial_.data(), h.size() * sizeof(double), cudaMemcpyDeviceToHost));
        ULCMOD_CUDA(cudaMemcpy(G, G_.data(), r * c * sizeof(T), cudaMemcpyDeviceToHost));
        for (int64_t i = 0; i < r; ++i) {
            double sum = 0.0;
            for (int64_t k = 0; k < chunks; ++k) sum += h[i * chunks + k];
            gp[i] = static_cast<T>(sum / static_cast<double>(n));
        }
    }

private:
    const IcaMatrix& X1_;
    DeviceBuffer<T> w_, WX_, G_;
    DeviceBuffer<double> partial_;
};

}  // namespace

template <class T>
DeviceWhitening<T> whiten_device(const DeviceArray& X, int64_t c) {
    DeviceGuard guard(X.device);
    ULCMOD_CUBLAS(cublasSetStream(cublas_handle(), kStream));
    DeviceWhitenSource<T> source(X);
    DeviceWhitening<T> out;
    out.w = whiten(static_cast<WhitenSource<T>&>(source), X.view.rows, X.view.cols, c);
    out.X1 = std::move(source.X1);
    return out;
}

template <class T>
std::shared_ptr<IcaMatrix> transpose_device(const DeviceArray& X) {
    DeviceGuard guard(X.device);
    auto m = make_matrix<T>(X.device, X.view.cols, X.view.rows);
    dispatch_view(X.view, [&](const auto& tv) {
        using S = std::decay_t<decltype(*tv.data)>;
        copy_kernel<S, T><<<blocks_for(m->rows * m->cols), kThreads, 0, kStream>>>(tv, true, data_of<T>(*m));
        ULCMOD_CUDA_LAUNCHED();
    });
    ULCMOD_CUDA(cudaStreamSynchronize(kStream));
    return m;
}

template <class T>
IcaRun<T> iterate_device(const IcaMatrix& X1, const T* W0, const IcaSettings& s) {
    DeviceGuard guard(X1.device);
    ULCMOD_CUBLAS(cublasSetStream(cublas_handle(), kStream));
    DeviceIcaData<T> data(X1);
    return fastica_iterate(static_cast<IcaData<T>&>(data), X1.rows, W0, s);
}

template DeviceWhitening<float> whiten_device(const DeviceArray&, int64_t);
template DeviceWhitening<double> whiten_device(const DeviceArray&, int64_t);
template std::shared_ptr<IcaMatrix> transpose_device<float>(const DeviceArray&);
template std::shared_ptr<IcaMatrix> transpose_device<double>(const DeviceArray&);
template IcaRun<float> iterate_device(const IcaMatrix&, const float*, const IcaSettings&);
template IcaRun<double> iterate_device(const IcaMatrix&, const double*, const IcaSettings&);

}  // namespace ulcmod::cuda
