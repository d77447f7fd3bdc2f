// The table and PCA-widening kernels, written once over simd.hpp and compiled once per ISA level
// by tables_isa_<level>.cpp, which defines ULCMOD_ISA_NS (its namespace) and ULCMOD_ISA_NAME.
// This file defines that level's KernelSet; tables.cpp plans the tasks and runs them on threads.
//
// Sums are float64 throughout (IterD's exactness rests on it): 16-bit and float32 values are
// widened to float (exact) and then to double before any addition.
//
// As in simd.hpp, nothing here may call an inline function or template of another header
// (std:: algorithms and containers included): a copy compiled with this file's flags could be
// the one the linker keeps for the whole library.
#pragma once

#include <type_traits>

#include "isa.hpp"
#include "simd.hpp"

#ifndef ULCMOD_ISA_NAME
#error "define ULCMOD_ISA_NAME before including table_kernels.hpp"
#endif

namespace ulcmod {
namespace ULCMOD_ISA_NS {
namespace {

inline int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

// d[0, len) += p[0, len * stride) (sign +1) or -= (sign -1), widened.
template <int Sign, class T>
inline void add_run(const T* p, int64_t stride, int64_t len, double* d) {
    int64_t i = 0;
    if (stride == 1) {
        for (; i + 8 <= len; i += 8) {
            const D8 v = widen_d8(p + i);
            d8_store(d + i, Sign > 0 ? d8_load(d + i) + v : d8_load(d + i) - v);
        }
    }
    for (; i < len; ++i) d[i] += Sign * scalar(p[i * stride]);
}

// Row pointers of the tile starting at row t (the last row repeated past the end).
template <class T>
inline void tile_rows(const Matrix& A, int64_t t, int64_t nr, const T* p[8]) {
    const T* base = static_cast<const T*>(A.data);
    for (int j = 0; j < 8; ++j) p[j] = base + (t + lmin(j, nr - 1)) * A.row_stride;
}

// Rows contiguous: 8 rows at a time. A tile of 8 rows x W columns is transposed in registers so
// each column's 8 values add, as one vector, into its label's accumulator (the label lookup
// serves 8 elements); col_stride != 1 reads the columns one element at a time. Column j of a
// tile adds into accumulator set j % sets (acc[set][label][0..8)): neighbouring columns with the
// same label then do not wait on each other's store (a chain of store-to-load forwards).
template <class T>
void build_rows_t(const Matrix& A, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const int32_t* lab, int K,
                  double* target, int64_t ld, double* acc) {
    constexpr int W = Tile<T>::W;
    const int64_t cs = A.col_stride;
    const int sets = row_acc_sets(c1 - c0, K);
    const int64_t set_size = 8 * int64_t{K};
    for (int64_t t = r0; t < r1; t += 8) {
        const int64_t nr = lmin(8, r1 - t);
        const T* p[8];
        tile_rows(A, t, nr, p);
        for (int64_t i = 0; i < sets * set_size; i += 8) d8_store(acc + i, d8_zero());
        int64_t c = c0;
        if (cs == 1) {
            for (; c + W <= c1; c += W) {
                D8 col[W];
                Tile<T>::load(p, c, col);
                for (int j = 0; j < W; ++j) {
                    double* a = acc + (j % sets) * set_size + 8 * static_cast<int64_t>(lab[c + j]);
                    d8_store(a, d8_load(a) + col[j]);
                }
            }
        }
        for (; c < c1; ++c) {
            double* a = acc + 8 * static_cast<int64_t>(lab[c]);
            d8_store(a, d8_load(a) + gather_d8(p, c * cs));
        }
        for (int s = 1; s < sets; ++s)
            for (int64_t i = 0; i < set_size; i += 8) d8_store(acc + i, d8_load(acc + i) + d8_load(acc + s * set_size + i));
        for (int64_t j = 0; j < nr; ++j) {
            double* o = target + (t - r0 + j) * ld;
            for (int k = 0; k < K; ++k) o[k] = acc[8 * k + j];
        }
    }
}

// Columns contiguous: each column's run of rows [r0, r1) adds, widened vector by vector, into
// its label's buffer buf[label][0..len); the K x len buffer is then transposed into the target.
template <class T>
void build_cols_t(const Matrix& A, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const int32_t* lab, int K,
                  double* target, int64_t ld, double* buf) {
    const T* base = static_cast<const T*>(A.data) + r0 * A.row_stride;
    const int64_t len = r1 - r0, L = col_buffer_stride(len);
    for (int64_t i = 0; i < K * L; i += 8) d8_store(buf + i, d8_zero());
    for (int64_t c = c0; c < c1; ++c)
        add_run<+1>(base + c * A.col_stride, A.row_stride, len, buf + static_cast<int64_t>(lab[c]) * L);
    for (int64_t i = 0; i < len; ++i) {
        double* o = target + i * ld;
        for (int k = 0; k < K; ++k) o[k] = buf[k * L + i];
    }
}

// Moves with rows contiguous: per tile of 8 rows, each moved column's 8 values (strided reads)
// leave acc[from] and join acc[to]; only the touched labels are cleared and written back.
template <class T>
void update_rows_t(const Matrix& A, int64_t r0, int64_t r1, const Move* moves, int64_t n, const int32_t* touched,
                   int nt, int /*K*/, double* target, int64_t ld, double* acc) {
    const int64_t cs = A.col_stride;
    for (int64_t t = r0; t < r1; t += 8) {
        const int64_t nr = lmin(8, r1 - t);
        const T* p[8];
        tile_rows(A, t, nr, p);
        for (int i = 0; i < nt; ++i) d8_store(acc + 8 * static_cast<int64_t>(touched[i]), d8_zero());
        for (int64_t m = 0; m < n; ++m) {
            const D8 v = gather_d8(p, moves[m].index * cs);
            double* from = acc + 8 * static_cast<int64_t>(moves[m].from);
            d8_store(from, d8_load(from) - v);
            double* to = acc + 8 * static_cast<int64_t>(moves[m].to);
            d8_store(to, d8_load(to) + v);
        }
        for (int64_t j = 0; j < nr; ++j) {
            double* o = target + (t - r0 + j) * ld;
            for (int i = 0; i < nt; ++i) o[touched[i]] += acc[8 * static_cast<int64_t>(touched[i]) + j];
        }
    }
}

// Moves with columns contiguous: each moved column's run leaves buf[from] and joins buf[to].
template <class T>
void update_cols_t(const Matrix& A, int64_t r0, int64_t r1, const Move* moves, int64_t n, const int32_t* touched,
                   int nt, int /*K*/, double* target, int64_t ld, double* buf) {
    const T* base = static_cast<const T*>(A.data) + r0 * A.row_stride;
    const int64_t len = r1 - r0, L = col_buffer_stride(len);
    for (int i = 0; i < nt; ++i)
        for (int64_t j = 0; j < L; j += 8) d8_store(buf + touched[i] * L + j, d8_zero());
    for (int64_t m = 0; m < n; ++m) {
        const T* p = base + moves[m].index * A.col_stride;
        add_run<-1>(p, A.row_stride, len, buf + static_cast<int64_t>(moves[m].from) * L);
        add_run<+1>(p, A.row_stride, len, buf + static_cast<int64_t>(moves[m].to) * L);
    }
    for (int64_t i = 0; i < len; ++i) {
        double* o = target + i * ld;
        for (int j = 0; j < nt; ++j) o[touched[j]] += buf[touched[j] * L + i];
    }
}

// PCA input: selected rows widened to float (double for float64 input), with float64 row sums.
template <class Out, class T>
inline auto widen_vec(const T* p) {
    if constexpr (std::is_same_v<Out, float>)
        return widen_f8(p);
    else
        return widen_d8(p);
}
inline void store_widened(float* d, F8 v) { f8_store(d, v); }
inline void store_widened(double* d, D8 v) { d8_store(d, v); }
inline D8 sum_terms(F8 v) { return to_d8(v); }
inline D8 sum_terms(D8 v) { return v; }

template <class T, class Out>
void widen_rows_t(const Matrix& A, const int64_t* rows, int64_t begin, int64_t end, Out* dst, int64_t ld,
                  double* sums) {
    const T* base = static_cast<const T*>(A.data);
    const int64_t M = A.cols, cs = A.col_stride;
    for (int64_t i = begin; i < end; ++i) {
        const T* p = base + (rows ? rows[i] : i) * A.row_stride;
        Out* d = dst + (i - begin) * ld;
        int64_t j = 0;
        D8 s0 = d8_zero(), s1 = d8_zero();
        if (cs == 1) {
            for (; j + 16 <= M; j += 16) {
                const auto a = widen_vec<Out>(p + j), b = widen_vec<Out>(p + j + 8);
                store_widened(d + j, a);
                store_widened(d + j + 8, b);
                s0 = s0 + sum_terms(a);
                s1 = s1 + sum_terms(b);
            }
        }
        alignas(64) double part[8];
        d8_store(part, s0 + s1);
        double s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        for (; j < M; ++j) {
            const double v = scalar(p[j * cs]);
            d[j] = static_cast<Out>(v);
            s += v;
        }
        sums[i - begin] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: switch on the element type.

template <class F>
inline void on_dtype(DType d, F&& f) {
    switch (d) {
        case DType::F16: f(static_cast<const half_t*>(nullptr)); return;
        case DType::BF16: f(static_cast<const bfloat16_t*>(nullptr)); return;
        case DType::F32: f(static_cast<const float*>(nullptr)); return;
        case DType::F64: f(static_cast<const double*>(nullptr)); return;
    }
}

template <class P>
using elem_t = std::remove_const_t<std::remove_pointer_t<P>>;

void build_rows(const Matrix& A, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const int32_t* lab, int K,
                double* target, int64_t ld, double* scratch) {
    on_dtype(A.dtype, [&](auto tag) { build_rows_t<elem_t<decltype(tag)>>(A, r0, r1, c0, c1, lab, K, target, ld, scratch); });
}
void build_cols(const Matrix& A, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const int32_t* lab, int K,
                double* target, int64_t ld, double* scratch) {
    on_dtype(A.dtype, [&](auto tag) { build_cols_t<elem_t<decltype(tag)>>(A, r0, r1, c0, c1, lab, K, target, ld, scratch); });
}
void update_rows(const Matrix& A, int64_t r0, int64_t r1, const Move* moves, int64_t n, const int32_t* touched,
                 int nt, int K, double* target, int64_t ld, double* scratch) {
    on_dtype(A.dtype, [&](auto tag) {
        update_rows_t<elem_t<decltype(tag)>>(A, r0, r1, moves, n, touched, nt, K, target, ld, scratch);
    });
}
void update_cols(const Matrix& A, int64_t r0, int64_t r1, const Move* moves, int64_t n, const int32_t* touched,
                 int nt, int K, double* target, int64_t ld, double* scratch) {
    on_dtype(A.dtype, [&](auto tag) {
        update_cols_t<elem_t<decltype(tag)>>(A, r0, r1, moves, n, touched, nt, K, target, ld, scratch);
    });
}
void widen_rows_f32(const Matrix& A, const int64_t* rows, int64_t begin, int64_t end, float* dst, int64_t ld,
                    double* sums) {
    switch (A.dtype) {
        case DType::F16: widen_rows_t<half_t>(A, rows, begin, end, dst, ld, sums); return;
        case DType::BF16: widen_rows_t<bfloat16_t>(A, rows, begin, end, dst, ld, sums); return;
        case DType::F32: widen_rows_t<float>(A, rows, begin, end, dst, ld, sums); return;
        case DType::F64: return;  // float64 input is widened to double (widen_rows_f64)
    }
}
void widen_rows_f64(const Matrix& A, const int64_t* rows, int64_t begin, int64_t end, double* dst, int64_t ld,
                    double* sums) {
    if (A.dtype == DType::F64) widen_rows_t<double>(A, rows, begin, end, dst, ld, sums);
}

}  // namespace

extern const KernelSet kernels;
const KernelSet kernels = {ULCMOD_ISA_NAME, build_rows, build_cols, update_rows, update_cols, widen_rows_f32,
                           widen_rows_f64};

}  // namespace ULCMOD_ISA_NS
}  // namespace ulcmod
