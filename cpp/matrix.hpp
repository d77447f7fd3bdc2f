// A read-only strided view of a dense 2-D array of float16, float32 or float64, and the
// dispatch that turns it into a typed view for the kernels. Nothing here owns memory: the
// kernels read the caller's buffer in place (NumPy arrays, memmaps, ...).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace ulcmod {

enum class DType { F16, F32, F64 };

// IEEE half -> float without F16C: shift the 15 exponent/mantissa bits into place, rebias the
// exponent, and let one float multiply renormalise subnormals. Branch-light so loops vectorise.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t bits = static_cast<uint32_t>(h & 0x7fffu) << 13;
    const uint32_t exponent = bits & (0x1fu << 23);
    uint32_t out;
    if (exponent == (0x1fu << 23)) {  // inf / nan: maximal float exponent, keep the payload
        out = bits | (0xffu << 23);
    } else if (exponent == 0) {  // zero or subnormal: value = mantissa * 2^-24
        float f;
        uint32_t scaled = bits + (113u << 23);  // mantissa as a float in [2^-14, 2^-13) + 2^-14
        std::memcpy(&f, &scaled, 4);
        f -= 6.103515625e-05f;  // 2^-14
        std::memcpy(&out, &f, 4);
    } else {
        out = bits + (112u << 23);  // rebias 15 -> 127
    }
    out |= sign;
    float result;
    std::memcpy(&result, &out, 4);
    return result;
}

inline double load(uint16_t v) { return half_to_float(v); }
inline double load(float v) { return v; }
inline double load(double v) { return v; }

struct Matrix {
    const void* data = nullptr;
    int64_t rows = 0, cols = 0;
    int64_t row_stride = 0, col_stride = 0;  // in elements, may be negative
    DType dtype = DType::F32;

    Matrix transposed() const { return {data, cols, rows, col_stride, row_stride, dtype}; }
    int64_t itemsize() const { return dtype == DType::F16 ? 2 : dtype == DType::F32 ? 4 : 8; }
    // Elements of one row lie next to each other (C order for the view).
    bool row_contiguous() const {
        return col_stride == 1 || (cols == 1) || (rows > 1 && std::abs(col_stride) < std::abs(row_stride));
    }
};

template <class T>
struct TypedMatrix {
    const T* data;
    int64_t rows, cols, rs, cs;
    double operator()(int64_t r, int64_t c) const { return load(data[r * rs + c * cs]); }
    const T* row_ptr(int64_t r) const { return data + r * rs; }
};

template <class F>
decltype(auto) dispatch(const Matrix& m, F&& f) {
    switch (m.dtype) {
        case DType::F16:
            return f(TypedMatrix<uint16_t>{static_cast<const uint16_t*>(m.data), m.rows, m.cols,
                                           m.row_stride, m.col_stride});
        case DType::F32:
            return f(TypedMatrix<float>{static_cast<const float*>(m.data), m.rows, m.cols,
                                        m.row_stride, m.col_stride});
        case DType::F64:
            return f(TypedMatrix<double>{static_cast<const double*>(m.data), m.rows, m.cols,
                                         m.row_stride, m.col_stride});
    }
    throw std::logic_error("unknown dtype");
}

}  // namespace ulcmod
