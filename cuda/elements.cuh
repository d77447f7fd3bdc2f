// Element types of activation matrices in device code: the storage types of cpp/matrix.hpp
// (half_t and bfloat16_t are the raw 16-bit patterns) widened to double, 16-byte vector loads,
// and the typed view / dtype dispatch used by the kernels' launchers.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>

#include "matrix.hpp"

namespace ulcmod::cuda {

__device__ __forceinline__ double to_double(half_t v) { return __half2float(__ushort_as_half(v.bits)); }
__device__ __forceinline__ double to_double(bfloat16_t v) { return __uint_as_float(static_cast<uint32_t>(v.bits) << 16); }
__device__ __forceinline__ double to_double(float v) { return v; }
__device__ __forceinline__ double to_double(double v) { return v; }

__device__ __forceinline__ float to_float(half_t v) { return __half2float(__ushort_as_half(v.bits)); }
__device__ __forceinline__ float to_float(bfloat16_t v) { return __uint_as_float(static_cast<uint32_t>(v.bits) << 16); }
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return static_cast<float>(v); }

// Narrowing with round-to-nearest-even, for writing results in the input's own type.
template <class T>
__device__ __forceinline__ T from_double(double v);
template <>
__device__ __forceinline__ half_t from_double<half_t>(double v) { return {__half_as_ushort(__double2half(v))}; }
template <>
__device__ __forceinline__ bfloat16_t from_double<bfloat16_t>(double v) {
    // float first (round to nearest), then float -> bfloat16 (round to nearest even); NaN stays NaN.
    const float f = static_cast<float>(v);
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {static_cast<uint16_t>(u >> 16)};
}
template <>
__device__ __forceinline__ float from_double<float>(double v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ double from_double<double>(double v) { return v; }

// Elements per 16-byte vector.
template <class T>
struct Vec {
    static constexpr int n = 16 / static_cast<int>(sizeof(T));
};

// Streaming 16-byte load (A is read once per pass: keep it out of L1).
template <class T>
__device__ __forceinline__ void load_vector(const T* p, T (&x)[Vec<T>::n]) {
    const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(p));
    static_assert(sizeof(raw) == sizeof(x), "vector size");
    memcpy(&x, &raw, sizeof raw);
}

template <class T>
struct TypedView {
    const T* data;
    int64_t rows, cols, rs, cs;
};

template <class F>
decltype(auto) dispatch_view(const Matrix& m, F&& f) {
    switch (m.dtype) {
        case DType::F16:
            return f(TypedView<half_t>{static_cast<const half_t*>(m.data), m.rows, m.cols, m.row_stride, m.col_stride});
        case DType::BF16:
            return f(TypedView<bfloat16_t>{static_cast<const bfloat16_t*>(m.data), m.rows, m.cols, m.row_stride,
                                           m.col_stride});
        case DType::F32:
            return f(TypedView<float>{static_cast<const float*>(m.data), m.rows, m.cols, m.row_stride, m.col_stride});
        case DType::F64:
            return f(TypedView<double>{static_cast<const double*>(m.data), m.rows, m.cols, m.row_stride,
                                       m.col_stride});
    }
    throw std::logic_error("unknown dtype");
}

}  // namespace ulcmod::cuda
