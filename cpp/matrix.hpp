// A read-only strided view of a dense 2-D array of float16, bfloat16, float32 or float64, and
// the dispatch that turns it into a typed view for the kernels. Nothing here owns memory: the
// kernels read the caller's buffer in place (NumPy arrays, memmaps, ...).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace ulcmod {

enum class DType { F16, BF16, F32, F64 };

// The two 16-bit storage formats, as distinct types so the kernels can overload on them.
struct half_t {
    uint16_t bits;
};
struct bfloat16_t {
    uint16_t bits;
};

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

// bfloat16 is the top half of a float32: widening is a 16-bit shift.
inline float bfloat16_to_float(uint16_t b) {
    const uint32_t bits = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline double load(half_t v) { return half_to_float(v.bits); }
inline double load(bfloat16_t v) { return bfloat16_to_float(v.bits); }
inline double load(float v) { return v; }
inline double load(double v) { return v; }

inline int64_t dtype_size(DType d) {
    return d == DType::F16 || d == DType::BF16 ? 2 : d == DType::F32 ? 4 : 8;
}

struct Matrix {
    const void* data = nullptr;
    int64_t rows = 0, cols = 0;
    int64_t row_stride = 0, col_stride = 0;  // in elements, may be negative
    DType dtype = DType::F32;

    Matrix transposed() const { return {data, cols, rows, col_stride, row_stride, dtype}; }
    int64_t itemsize() const { return dtype_size(dtype); }
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
            return f(TypedMatrix<half_t>{static_cast<const half_t*>(m.data), m.rows, m.cols,
                                         m.row_stride, m.col_stride});
        case DType::BF16:
            return f(TypedMatrix<bfloat16_t>{static_cast<const bfloat16_t*>(m.data), m.rows, m.cols,
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
