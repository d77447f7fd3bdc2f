#include "zscore.hpp"

#include <algorithm>
#include <stdexcept>

#include "common.hpp"
#include "elements.cuh"
#include "tables.cuh"

namespace ulcmod::cuda {
namespace {

constexpr cudaStream_t kStream = 0;

__device__ __forceinline__ void finish(double s1, double s2, double x0, int64_t n, double* mean, double* var) {
    const double m = s1 / static_cast<double>(n);
    *mean = x0 + m;
    *var = fmax(s2 / static_cast<double>(n) - m * m, 0.0);
}

// Rows are contiguous lines: one warp per row.
template <class T>
__global__ void stats_rowwise_kernel(TypedView<T> A, double* __restrict__ mean, double* __restrict__ var) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
    for (int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < A.rows; r += warps) {
        const T* row = A.data + r * A.rs;
        const double x0 = to_double(row[0]);
        double s1 = 0.0, s2 = 0.0;
        for (int64_t c = lane; c < A.cols; c += 32) {
            const double d = to_double(row[c * A.cs]) - x0;
            s1 += d;
            s2 += d * d;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            s1 += __shfl_down_sync(0xffffffffu, s1, o);
            s2 += __shfl_down_sync(0xffffffffu, s2, o);
        }
        if (lane == 0) finish(s1, s2, x0, A.cols, mean + r, var + r);
    }
}

// Columns are contiguous lines: one thread per row, walking the columns (coalesced across threads).
template <class T>
__global__ void stats_colwise_kernel(TypedView<T> A, double* __restrict__ mean, double* __restrict__ var) {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (r >= A.rows) return;
    const T* p = A.data + r * A.rs;
    const double x0 = to_double(p[0]);
    double s1 = 0.0, s2 = 0.0;
    for (int64_t c = 0; c < A.cols; ++c) {
        const double d = to_double(p[c * A.cs]) - x0;
        s1 += d;
        s2 += d * d;
    }
    finish(s1, s2, x0, A.cols, mean + r, var + r);
}

template <class T, class O>
__global__ void apply_kernel(TypedView<T> A, bool rowwise, const double* __restrict__ mean,
                             const double* __restrict__ stdev, O* __restrict__ out, int64_t ors, int64_t ocs) {
    const int64_t total = A.rows * A.cols;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t r, c;
        if (rowwise) {
            r = idx / A.cols;
            c = idx - r * A.cols;
        } else {
            c = idx / A.rows;
            r = idx - c * A.rows;
        }
        const double z = (to_double(A.data[r * A.rs + c * A.cs]) - mean[r]) / stdev[r];
        out[r * ors + c * ocs] = from_double<O>(z);
    }
}

template <class F>
decltype(auto) dispatch_out(DType d, void* p, F&& f) {
    switch (d) {
        case DType::F16: return f(static_cast<half_t*>(p));
        case DType::BF16: return f(static_cast<bfloat16_t*>(p));
        case DType::F32: return f(static_cast<float*>(p));
        case DType::F64: return f(static_cast<double*>(p));
    }
    throw std::logic_error("unknown dtype");
}

}  // namespace

RowStats row_stats(const DeviceArray& A) {
    DeviceGuard guard(A.device);
    const int64_t rows = A.view.rows;
    RowStats out;
    out.mean.resize(rows);
    out.var.resize(rows);
    if (rows == 0 || A.view.cols == 0) return out;
    DeviceBuffer<double> mean(rows), var(rows);
    const bool rowwise = layout_of(A.view) == Layout::Rowwise;
    dispatch_view(A.view, [&](const auto& tv) {
        using T = std::decay_t<decltype(*tv.data)>;
        if (rowwise) {
            const unsigned grid = static_cast<unsigned>(std::min<int64_t>((rows + 7) / 8, 65535));
            stats_rowwise_kernel<T><<<grid, 256, 0, kStream>>>(tv, mean.data(), var.data());
        } else {
            stats_colwise_kernel<T><<<static_cast<unsigned>((rows + 255) / 256), 256, 0, kStream>>>(tv, mean.data(),
                                                                                              var.data());
        }
        ULCMOD_CUDA_LAUNCHED();
    });
    ULCMOD_CUDA(cudaMemcpyAsync(out.mean.data(), mean.data(), rows * sizeof(double), cudaMemcpyDeviceToHost, kStream));
    ULCMOD_CUDA(cudaMemcpyAsync(out.var.data(), var.data(), rows * sizeof(double), cudaMemcpyDeviceToHost, kStream));
    ULCMOD_CUDA(cudaStreamSynchronize(kStream));
    return out;
}

void zscore_apply(const DeviceArray& A, const double* mean, const double* std, const DeviceArray& out) {
    if (out.view.rows != A.view.rows || out.view.cols != A.view.cols)
        throw std::invalid_argument("out must have the shape of A");
    if (out.device != A.device) throw std::invalid_argument("out must be on A's device");
    DeviceGuard guard(A.device);
    const int64_t rows = A.view.rows;
    DeviceBuffer<double> d_mean, d_std;
    d_mean.upload(mean, rows, kStream);
    d_std.upload(std, rows, kStream);
    const bool rowwise = layout_of(A.view) == Layout::Rowwise;
    const int64_t total = rows * A.view.cols;
    const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((total + 255) / 256, 1 << 20)));
    dispatch_view(A.view, [&](const auto& tv) {
        using T = std::decay_t<decltype(*tv.data)>;
        dispatch_out(out.view.dtype, const_cast<void*>(out.view.data), [&](auto* o) {
            using O = std::decay_t<decltype(*o)>;
            apply_kernel<T, O><<<grid, 256, 0, kStream>>>(tv, rowwise, d_mean.data(), d_std.data(), o,
                                                          out.view.row_stride, out.view.col_stride);
            ULCMOD_CUDA_LAUNCHED();
        });
    });
    ULCMOD_CUDA(cudaStreamSynchronize(kStream));
}

}  // namespace ulcmod::cuda
