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

// The tile's sums acc[label][row] (8 rows) into target rows 0..nr (row stride ld), 8 labels at a
// time through an 8x8 transpose in registers. tmp: row_tile_scratch(K) doubles. With `stream`
// and contiguous target rows (ld == K), the rows are assembled in tmp and written as one block
// with non-temporal stores, so that its cache lines are whole.
inline void store_rows(const double* acc, int K, int64_t nr, double* target, int64_t ld, double* tmp, bool stream) {
    const bool block = stream && ld == K;
    double* dst = block ? tmp + 64 : target;
    const int64_t dld = block ? K : ld;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        const double* rows[8];
        for (int j = 0; j < 8; ++j) rows[j] = acc + 8 * (k + j);
        for (int w = 0; w < 8; w += Tile<double>::W) Tile<double>::load(rows, w, tmp + 8 * w);
        for (int64_t j = 0; j < nr; ++j) d8_store(dst + j * dld + k, d8_load(tmp + 8 * j));
    }
    for (; k < K; ++k)
        for (int64_t j = 0; j < nr; ++j) dst[j * dld + k] = acc[8 * k + j];
    if (!block) return;
    const int64_t n = nr * K;
    int64_t i = 0;
    for (; i < n && reinterpret_cast<uintptr_t>(target + i) % 64 != 0; ++i) target[i] = dst[i];
    for (; i + 8 <= n; i += 8) d8_stream(target + i, d8_load(dst + i));
    for (; i < n; ++i) target[i] = dst[i];
}

// Rows contiguous: 8 rows at a time, one column group at a time. Pass 1 reads the group as tiles
// of 8 rows x W columns, transposed in registers so that each column's 8 values land in one slot
// of scratch, still in the element type (16 bytes per column for 16-bit data); col_stride != 1
// fills the slots element by element. Pass 2 walks the group's columns in label order, sums each
// run of equal labels in registers (widened to double) and adds the run to its label's
// accumulator once. A store per column into the accumulators makes the loads of A wait on
// stores: streaming from DRAM ran at about half the in-cache speed that way (measured on the
// Zen 4 development machine), much closer to it with the sums kept in registers. With short rows
// (G.prefetch_next_tile), each step of pass 1 also prefetches as many bytes of the next tile's
// rows as it reads: 8 short rows are 8 short streams, too short for hardware prefetchers.
template <class T>
void build_rows_t(const Matrix& A, int64_t r0, int64_t r1, int64_t g0, int64_t g1, const LabelGroups& G, int K,
                  double* target, int64_t ld, double* scratch) {
    constexpr int W = Tile<T>::W;
    constexpr int64_t item = sizeof(T), S = sizeof(T);  // S: doubles per column slot (8 elements)
    double* acc = scratch;                               // acc[label][0..8)
    double* slots = scratch + 8 * int64_t{K};
    double* tmp = slots + 8 * G.size;
    const int64_t cs = A.col_stride, cols = A.cols;
    const int64_t c_first = g0 * G.size, row_bytes = (lmin(cols, g1 * G.size) - c_first) * item;
    for (int64_t t = r0; t < r1; t += 8) {
        const int64_t nr = lmin(8, r1 - t);
        const T* p[8];
        tile_rows(A, t, nr, p);
        for (int k = 0; k < K; ++k) d8_store(acc + 8 * k, d8_zero());
        // The next tile's rows [c_first, ...), line by line.
        const int64_t next_rows = G.prefetch_next_tile && cs == 1 && t + 8 < r1 ? lmin(8, r1 - t - 8) : 0;
        const char* next = next_rows > 0 ? reinterpret_cast<const char*>(p[7] + A.row_stride + c_first) : nullptr;
        int64_t next_row = 0, next_off = 0;
        for (int64_t g = g0; g < g1; ++g) {
            const int64_t cb = g * G.size, n = lmin(G.size, cols - cb);
            int64_t o = 0;
            if (cs == 1)
                for (; o + W <= n; o += W) {
                    for (int64_t b = 0; b < 8 * W * item && next_row < next_rows; b += 64) {
                        __builtin_prefetch(next + next_row * A.row_stride * item + next_off);
                        next_off += 64;
                        if (next_off >= row_bytes) next_off = 0, ++next_row;
                    }
                    Tile<T>::load(p, cb + o, slots + o * S);
                }
            for (; o < n; ++o) slot_gather(p, (cb + o) * cs, slots + o * S);
            const uint16_t* order = G.offset + cb;
            int64_t i = 0;
            for (int64_t r = G.first_run[g]; r < G.first_run[g + 1]; ++r) {
                const int64_t end = G.run_end[r];
                D8 a = d8_zero(), b = d8_zero();
                for (; i + 2 <= end; i += 2) {
                    a = a + slot_widen<T>(slots + order[i] * S);
                    b = b + slot_widen<T>(slots + order[i + 1] * S);
                }
                if (i < end) a = a + slot_widen<T>(slots + order[i++] * S);
                double* acc_k = acc + 8 * static_cast<int64_t>(G.run_label[r]);
                d8_store(acc_k, d8_load(acc_k) + (a + b));
            }
        }
        store_rows(acc, K, nr, target + (t - r0) * ld, ld, tmp, G.stream_output);
    }
    if (G.stream_output) stream_fence();
}

// Columns contiguous: the task's rows [r0, r1) accumulate into K buffers buf[label][0..len).
// Each run of equal labels is walked kColChunk columns at a time: the chunk's columns are summed in
// registers, 32 rows at a time down the chunk, and added to their label's buffer once per 32
// rows. Groups are large enough that runs hold several chunks (tables.cpp), so the buffers take
// one read-modify-write per chunk instead of one per column or short run, while the memory
// system sees only kColChunk streams at a time. The chunk after this one is prefetched into L2,
// spread over this chunk's steps: a chunk is kColChunk streams, scattered over the group by the
// label order, that hardware prefetchers would find too late.
template <class T>
void build_cols_t(const Matrix& A, int64_t r0, int64_t r1, int64_t g0, int64_t g1, const LabelGroups& G, int K,
                  double* target, int64_t ld, double* buf) {
    constexpr int64_t item = sizeof(T);
    const int64_t rs = A.row_stride, cs = A.col_stride, cols = A.cols;
    const T* base = static_cast<const T*>(A.data) + r0 * rs;
    const int64_t len = r1 - r0, L = col_buffer_stride(len), steps = len / 32 > 0 ? len / 32 : 1;
    const int64_t col_bytes = len * item;
    for (int64_t i = 0; i < K * L; i += 8) d8_store(buf + i, d8_zero());
    for (int64_t g = g0; g < g1; ++g) {
        const int64_t cb = g * G.size, n = lmin(G.size, cols - cb);
        const uint16_t* order = G.offset + cb;
        const T* gb = base + cb * cs;
        int64_t i = 0;
        for (int64_t r = G.first_run[g]; r < G.first_run[g + 1]; ++r) {
            const int64_t end = G.run_end[r];
            double* d = buf + G.run_label[r] * L;
            for (; i < end;) {
                const int64_t c1 = lmin(end, i + kColChunk), p1 = lmin(n, c1 + kColChunk);
                const int64_t per_step = rs == 1 ? ((p1 - c1) * ((col_bytes + 63) / 64) + steps - 1) / steps : 0;
                int64_t pc = c1, poff = 0;
                int64_t x = 0;
                if (rs == 1) {
                    for (; x + 32 <= len; x += 32) {
                        for (int64_t q = 0; q < per_step && pc < p1; ++q) {
                            __builtin_prefetch(reinterpret_cast<const char*>(gb + order[pc] * cs) + poff, 0, 2);
                            poff += 64;
                            if (poff >= col_bytes) poff = 0, ++pc;
                        }
                        D8 a0 = d8_zero(), a1 = d8_zero(), a2 = d8_zero(), a3 = d8_zero();
                        for (int64_t j = i; j < c1; ++j) {
                            const T* q = gb + order[j] * cs + x;
                            a0 = a0 + widen_d8(q);
                            a1 = a1 + widen_d8(q + 8);
                            a2 = a2 + widen_d8(q + 16);
                            a3 = a3 + widen_d8(q + 24);
                        }
                        d8_store(d + x, d8_load(d + x) + a0);
                        d8_store(d + x + 8, d8_load(d + x + 8) + a1);
                        d8_store(d + x + 16, d8_load(d + x + 16) + a2);
                        d8_store(d + x + 24, d8_load(d + x + 24) + a3);
                    }
                    for (; x + 8 <= len; x += 8) {
                        D8 a = d8_zero();
                        for (int64_t j = i; j < c1; ++j) a = a + widen_d8(gb + order[j] * cs + x);
                        d8_store(d + x, d8_load(d + x) + a);
                    }
                }
                for (; x < len; ++x) {  // the last rows, or every row when rows are strided
                    double a = 0.0;
                    for (int64_t j = i; j < c1; ++j) a += scalar(gb[order[j] * cs + x * rs]);
                    d[x] += a;
                }
                i = c1;
            }
        }
    }
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

void build_rows(const Matrix& A, int64_t r0, int64_t r1, int64_t g0, int64_t g1, const LabelGroups& G, int K,
                double* target, int64_t ld, double* scratch) {
    on_dtype(A.dtype, [&](auto tag) { build_rows_t<elem_t<decltype(tag)>>(A, r0, r1, g0, g1, G, K, target, ld, scratch); });
}
void build_cols(const Matrix& A, int64_t r0, int64_t r1, int64_t g0, int64_t g1, const LabelGroups& G, int K,
                double* target, int64_t ld, double* scratch) {
    on_dtype(A.dtype, [&](auto tag) { build_cols_t<elem_t<decltype(tag)>>(A, r0, r1, g0, g1, G, K, target, ld, scratch); });
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
