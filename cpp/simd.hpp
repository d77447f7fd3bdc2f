// SIMD building blocks of the table kernels, written once and compiled once per ISA level.
//
// Only table_kernels.hpp includes this file, from the tables_isa_*.cpp sources, each compiled
// with its own -m flags (CMakeLists.txt) and each defining ULCMOD_ISA_NS to its own namespace.
// The level is read from the compiler's macros: AVX-512 (F/BW/VL/DQ + F16C), AVX2 (+ FMA, F16C),
// SSE2 (baseline x86-64), NEON (baseline AArch64), or plain C++.
//
// Everything here has internal linkage (an unnamed namespace) and calls no inline function of
// another header: an inline function compiled with AVX-512 flags in this file could otherwise be
// the copy the linker keeps for every other file, and crash a CPU without AVX-512.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "matrix.hpp"

#ifndef ULCMOD_ISA_NS
#error "define ULCMOD_ISA_NS (the kernels' namespace) before including simd.hpp"
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__F16C__)
#define ULCMOD_SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ULCMOD_SIMD_AVX2 1
#elif defined(__SSE2__) && (defined(__x86_64__) || defined(_M_X64))
#define ULCMOD_SIMD_SSE2 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define ULCMOD_SIMD_NEON 1
#else
#define ULCMOD_SIMD_SCALAR 1
#endif

#if defined(ULCMOD_SIMD_AVX512) || defined(ULCMOD_SIMD_AVX2)
#define ULCMOD_SIMD_AVX 1  // 256-bit float vectors and F16C
#endif
#if defined(ULCMOD_SIMD_AVX) || defined(ULCMOD_SIMD_SSE2)
#define ULCMOD_SIMD_X86 1  // 128-bit integer vectors (SSE2 at every x86-64 level)
#endif

namespace ulcmod {
namespace ULCMOD_ISA_NS {
namespace {

// ---------------------------------------------------------------------------------------------
// D8: eight doubles (a tile column of 8 rows, or 8 neighbouring elements). F8: eight floats.
// U8: eight raw 16-bit values (float16 or bfloat16 bits).

#if defined(ULCMOD_SIMD_AVX512)
struct D8 {
    __m512d v;
};
inline D8 d8_zero() { return {_mm512_setzero_pd()}; }
inline D8 d8_load(const double* p) { return {_mm512_loadu_pd(p)}; }
inline void d8_store(double* p, D8 a) { _mm512_storeu_pd(p, a.v); }
inline D8 operator+(D8 a, D8 b) { return {_mm512_add_pd(a.v, b.v)}; }
inline D8 operator-(D8 a, D8 b) { return {_mm512_sub_pd(a.v, b.v)}; }
#elif defined(ULCMOD_SIMD_AVX2)
struct D8 {
    __m256d lo, hi;
};
inline D8 d8_zero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
inline D8 d8_load(const double* p) { return {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)}; }
inline void d8_store(double* p, D8 a) {
    _mm256_storeu_pd(p, a.lo);
    _mm256_storeu_pd(p + 4, a.hi);
}
inline D8 operator+(D8 a, D8 b) { return {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
inline D8 operator-(D8 a, D8 b) { return {_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)}; }
#elif defined(ULCMOD_SIMD_SSE2) || defined(ULCMOD_SIMD_NEON)
#if defined(ULCMOD_SIMD_SSE2)
using D2 = __m128d;
inline D2 d2_zero() { return _mm_setzero_pd(); }
inline D2 d2_load(const double* p) { return _mm_loadu_pd(p); }
inline void d2_store(double* p, D2 a) { _mm_storeu_pd(p, a); }
inline D2 d2_add(D2 a, D2 b) { return _mm_add_pd(a, b); }
inline D2 d2_sub(D2 a, D2 b) { return _mm_sub_pd(a, b); }
#else
using D2 = float64x2_t;
inline D2 d2_zero() { return vdupq_n_f64(0.0); }
inline D2 d2_load(const double* p) { return vld1q_f64(p); }
inline void d2_store(double* p, D2 a) { vst1q_f64(p, a); }
inline D2 d2_add(D2 a, D2 b) { return vaddq_f64(a, b); }
inline D2 d2_sub(D2 a, D2 b) { return vsubq_f64(a, b); }
#endif
struct D8 {
    D2 v[4];
};
inline D8 d8_zero() { return {{d2_zero(), d2_zero(), d2_zero(), d2_zero()}}; }
inline D8 d8_load(const double* p) { return {{d2_load(p), d2_load(p + 2), d2_load(p + 4), d2_load(p + 6)}}; }
inline void d8_store(double* p, D8 a) {
    for (int i = 0; i < 4; ++i) d2_store(p + 2 * i, a.v[i]);
}
inline D8 operator+(D8 a, D8 b) {
    return {{d2_add(a.v[0], b.v[0]), d2_add(a.v[1], b.v[1]), d2_add(a.v[2], b.v[2]), d2_add(a.v[3], b.v[3])}};
}
inline D8 operator-(D8 a, D8 b) {
    return {{d2_sub(a.v[0], b.v[0]), d2_sub(a.v[1], b.v[1]), d2_sub(a.v[2], b.v[2]), d2_sub(a.v[3], b.v[3])}};
}
#else
struct D8 {
    double v[8];
};
inline D8 d8_zero() { return {{0, 0, 0, 0, 0, 0, 0, 0}}; }
inline D8 d8_load(const double* p) {
    D8 a;
    for (int i = 0; i < 8; ++i) a.v[i] = p[i];
    return a;
}
inline void d8_store(double* p, D8 a) {
    for (int i = 0; i < 8; ++i) p[i] = a.v[i];
}
inline D8 operator+(D8 a, D8 b) {
    for (int i = 0; i < 8; ++i) a.v[i] += b.v[i];
    return a;
}
inline D8 operator-(D8 a, D8 b) {
    for (int i = 0; i < 8; ++i) a.v[i] -= b.v[i];
    return a;
}
#endif

// d8_store bypassing the caches (non-temporal) when p is 64-byte aligned (a whole cache line;
// narrower non-temporal stores measured slower than plain ones); call stream_fence() after the
// last one.
inline void d8_stream(double* p, D8 a) {
    if (reinterpret_cast<uintptr_t>(p) % 64 != 0) return d8_store(p, a);
#if defined(ULCMOD_SIMD_AVX512)
    _mm512_stream_pd(p, a.v);
#elif defined(ULCMOD_SIMD_AVX2)
    _mm256_stream_pd(p, a.lo);
    _mm256_stream_pd(p + 4, a.hi);
#elif defined(ULCMOD_SIMD_SSE2)
    for (int i = 0; i < 4; ++i) _mm_stream_pd(p + 2 * i, a.v[i]);
#else
    d8_store(p, a);
#endif
}
inline void stream_fence() {
#if defined(ULCMOD_SIMD_X86)
    _mm_sfence();
#endif
}

#if defined(ULCMOD_SIMD_AVX)
using F8 = __m256;
inline F8 f8_load(const float* p) { return _mm256_loadu_ps(p); }
inline void f8_store(float* p, F8 a) { _mm256_storeu_ps(p, a); }
#if defined(ULCMOD_SIMD_AVX512)
inline D8 to_d8(F8 a) { return {_mm512_cvtps_pd(a)}; }
#else
inline D8 to_d8(F8 a) {
    return {_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))};
}
#endif
#elif defined(ULCMOD_SIMD_SSE2) || defined(ULCMOD_SIMD_NEON)
#if defined(ULCMOD_SIMD_SSE2)
using F4 = __m128;
inline F4 f4_load(const float* p) { return _mm_loadu_ps(p); }
inline void f4_store(float* p, F4 a) { _mm_storeu_ps(p, a); }
inline D2 low_d2(F4 a) { return _mm_cvtps_pd(a); }
inline D2 high_d2(F4 a) { return _mm_cvtps_pd(_mm_movehl_ps(a, a)); }
#else
using F4 = float32x4_t;
inline F4 f4_load(const float* p) { return vld1q_f32(p); }
inline void f4_store(float* p, F4 a) { vst1q_f32(p, a); }
inline D2 low_d2(F4 a) { return vcvt_f64_f32(vget_low_f32(a)); }
inline D2 high_d2(F4 a) { return vcvt_high_f64_f32(a); }
#endif
struct F8 {
    F4 lo, hi;
};
inline F8 f8_load(const float* p) { return {f4_load(p), f4_load(p + 4)}; }
inline void f8_store(float* p, F8 a) {
    f4_store(p, a.lo);
    f4_store(p + 4, a.hi);
}
inline D8 to_d8(F8 a) { return {{low_d2(a.lo), high_d2(a.lo), low_d2(a.hi), high_d2(a.hi)}}; }
#else
struct F8 {
    float v[8];
};
inline F8 f8_load(const float* p) {
    F8 a;
    for (int i = 0; i < 8; ++i) a.v[i] = p[i];
    return a;
}
inline void f8_store(float* p, F8 a) {
    for (int i = 0; i < 8; ++i) p[i] = a.v[i];
}
inline D8 to_d8(F8 a) {
    D8 d;
    for (int i = 0; i < 8; ++i) d.v[i] = a.v[i];
    return d;
}
#endif

// ---------------------------------------------------------------------------------------------
// 16-bit values: U8 loads, an 8x8 transpose, and the two conversions to float.

#if defined(ULCMOD_SIMD_X86)
using U8 = __m128i;
inline U8 u8_load(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline U8 zip_lo16(U8 a, U8 b) { return _mm_unpacklo_epi16(a, b); }
inline U8 zip_hi16(U8 a, U8 b) { return _mm_unpackhi_epi16(a, b); }
inline U8 zip_lo32(U8 a, U8 b) { return _mm_unpacklo_epi32(a, b); }
inline U8 zip_hi32(U8 a, U8 b) { return _mm_unpackhi_epi32(a, b); }
inline U8 zip_lo64(U8 a, U8 b) { return _mm_unpacklo_epi64(a, b); }
inline U8 zip_hi64(U8 a, U8 b) { return _mm_unpackhi_epi64(a, b); }
#elif defined(ULCMOD_SIMD_NEON)
using U8 = uint16x8_t;
inline U8 u8_load(const void* p) { return vld1q_u16(static_cast<const uint16_t*>(p)); }
inline U8 zip_lo16(U8 a, U8 b) { return vzip1q_u16(a, b); }
inline U8 zip_hi16(U8 a, U8 b) { return vzip2q_u16(a, b); }
inline U8 zip_lo32(U8 a, U8 b) {
    return vreinterpretq_u16_u32(vzip1q_u32(vreinterpretq_u32_u16(a), vreinterpretq_u32_u16(b)));
}
inline U8 zip_hi32(U8 a, U8 b) {
    return vreinterpretq_u16_u32(vzip2q_u32(vreinterpretq_u32_u16(a), vreinterpretq_u32_u16(b)));
}
inline U8 zip_lo64(U8 a, U8 b) {
    return vreinterpretq_u16_u64(vzip1q_u64(vreinterpretq_u64_u16(a), vreinterpretq_u64_u16(b)));
}
inline U8 zip_hi64(U8 a, U8 b) {
    return vreinterpretq_u16_u64(vzip2q_u64(vreinterpretq_u64_u16(a), vreinterpretq_u64_u16(b)));
}
#else
struct U8 {
    uint16_t v[8];
};
inline U8 u8_load(const void* p) {
    U8 a;
    const uint16_t* q = static_cast<const uint16_t*>(p);
    for (int i = 0; i < 8; ++i) a.v[i] = q[i];
    return a;
}
#endif

// r[j] holds 8 values of row j; afterwards r[c] holds the 8 rows' values of column c.
inline void transpose8x8_u16(U8 r[8]) {
#if defined(ULCMOD_SIMD_SCALAR)
    U8 t[8];
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j) t[i].v[j] = r[j].v[i];
    for (int i = 0; i < 8; ++i) r[i] = t[i];
#else
    const U8 a0 = zip_lo16(r[0], r[1]), a1 = zip_hi16(r[0], r[1]);  // rows 0-1 of cols 0-3, 4-7
    const U8 a2 = zip_lo16(r[2], r[3]), a3 = zip_hi16(r[2], r[3]);
    const U8 a4 = zip_lo16(r[4], r[5]), a5 = zip_hi16(r[4], r[5]);
    const U8 a6 = zip_lo16(r[6], r[7]), a7 = zip_hi16(r[6], r[7]);
    const U8 b0 = zip_lo32(a0, a2), b1 = zip_hi32(a0, a2);  // rows 0-3 of cols 0-1, 2-3
    const U8 b2 = zip_lo32(a1, a3), b3 = zip_hi32(a1, a3);  // rows 0-3 of cols 4-5, 6-7
    const U8 b4 = zip_lo32(a4, a6), b5 = zip_hi32(a4, a6);  // rows 4-7
    const U8 b6 = zip_lo32(a5, a7), b7 = zip_hi32(a5, a7);
    r[0] = zip_lo64(b0, b4);
    r[1] = zip_hi64(b0, b4);
    r[2] = zip_lo64(b1, b5);
    r[3] = zip_hi64(b1, b5);
    r[4] = zip_lo64(b2, b6);
    r[5] = zip_hi64(b2, b6);
    r[6] = zip_lo64(b3, b7);
    r[7] = zip_hi64(b3, b7);
#endif
}

#if defined(ULCMOD_SIMD_SSE2)
// IEEE half -> float for 4 halves zero-extended to 32-bit lanes, with SSE2 integer operations
// only (no F16C at this level): the bit manipulation of matrix.hpp's half_to_float, branch-free.
inline __m128 half4_to_float(__m128i h) {
    const __m128i exp_mask = _mm_set1_epi32(0x7c00 << 13);
    const __m128i shifted = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x7fff)), 13);
    const __m128i exponent = _mm_and_si128(shifted, exp_mask);
    __m128i out = _mm_add_epi32(shifted, _mm_set1_epi32(112 << 23));  // rebias 15 -> 127
    // inf / nan: maximal float exponent
    out = _mm_add_epi32(out, _mm_and_si128(_mm_cmpeq_epi32(exponent, exp_mask), _mm_set1_epi32(112 << 23)));
    // zero / subnormal: renormalise by one float subtraction
    const __m128i is_small = _mm_cmpeq_epi32(exponent, _mm_setzero_si128());
    const __m128 renorm = _mm_sub_ps(_mm_castsi128_ps(_mm_add_epi32(out, _mm_set1_epi32(1 << 23))),
                                     _mm_castsi128_ps(_mm_set1_epi32(113 << 23)));
    out = _mm_or_si128(_mm_and_si128(is_small, _mm_castps_si128(renorm)), _mm_andnot_si128(is_small, out));
    out = _mm_or_si128(out, _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16));
    return _mm_castsi128_ps(out);
}
#endif

inline F8 cvt_half(U8 x) {
#if defined(ULCMOD_SIMD_AVX)
    return _mm256_cvtph_ps(x);
#elif defined(ULCMOD_SIMD_SSE2)
    const __m128i zero = _mm_setzero_si128();
    return {half4_to_float(_mm_unpacklo_epi16(x, zero)), half4_to_float(_mm_unpackhi_epi16(x, zero))};
#elif defined(ULCMOD_SIMD_NEON)
    const float16x8_t h = vreinterpretq_f16_u16(x);
    return {vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)};
#else
    F8 f;
    for (int i = 0; i < 8; ++i) f.v[i] = half_to_float(x.v[i]);
    return f;
#endif
}

// bfloat16 is the top half of a float32: put the 16 bits above 16 zero bits.
inline F8 cvt_bf16(U8 x) {
#if defined(ULCMOD_SIMD_AVX512)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
#elif defined(ULCMOD_SIMD_AVX2)
    const __m128i zero = _mm_setzero_si128();
    return _mm256_castsi256_ps(
        _mm256_set_m128i(_mm_unpackhi_epi16(zero, x), _mm_unpacklo_epi16(zero, x)));
#elif defined(ULCMOD_SIMD_SSE2)
    const __m128i zero = _mm_setzero_si128();
    return {_mm_castsi128_ps(_mm_unpacklo_epi16(zero, x)), _mm_castsi128_ps(_mm_unpackhi_epi16(zero, x))};
#elif defined(ULCMOD_SIMD_NEON)
    return {vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(x), 16)), vreinterpretq_f32_u32(vshll_high_n_u16(x, 16))};
#else
    F8 f;
    for (int i = 0; i < 8; ++i) f.v[i] = bfloat16_to_float(x.v[i]);
    return f;
#endif
}

// ---------------------------------------------------------------------------------------------
// Per element type: one element as a double, 8 neighbouring elements as floats or doubles.

inline double scalar(half_t h) {
#if defined(ULCMOD_SIMD_AVX)
    return _cvtsh_ss(h.bits);
#elif defined(ULCMOD_SIMD_NEON)
    float16_t f;
    __builtin_memcpy(&f, &h.bits, 2);
    return static_cast<float>(f);
#else
    return half_to_float(h.bits);  // baseline levels only: inline functions compiled alike
#endif
}
inline double scalar(bfloat16_t b) {
    const uint32_t bits = static_cast<uint32_t>(b.bits) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}
inline double scalar(float v) { return v; }
inline double scalar(double v) { return v; }

template <class T16>
F8 cvt16(U8 x);
template <>
inline F8 cvt16<half_t>(U8 x) {
    return cvt_half(x);
}
template <>
inline F8 cvt16<bfloat16_t>(U8 x) {
    return cvt_bf16(x);
}

inline F8 widen_f8(const half_t* p) { return cvt_half(u8_load(p)); }
inline F8 widen_f8(const bfloat16_t* p) { return cvt_bf16(u8_load(p)); }
inline F8 widen_f8(const float* p) { return f8_load(p); }

template <class T>
inline D8 widen_d8(const T* p) {
    return to_d8(widen_f8(p));
}
inline D8 widen_d8(const double* p) { return d8_load(p); }

// The elements p[j][off] of 8 rows, as doubles (strided reads: tails and scattered moves). On
// x86 the 8 values are inserted into one register (an 8-lane store then a vector load would stall
// on store-to-load forwarding) and converted together.
template <class T>
inline D8 gather_d8(const T* const p[8], int64_t off) {
#if defined(ULCMOD_SIMD_X86)
    if constexpr (sizeof(T) == 2) {
        const U8 bits = _mm_setr_epi16(p[0][off].bits, p[1][off].bits, p[2][off].bits, p[3][off].bits, p[4][off].bits,
                                       p[5][off].bits, p[6][off].bits, p[7][off].bits);
        return to_d8(cvt16<T>(bits));
    } else if constexpr (sizeof(T) == 4) {
#if defined(ULCMOD_SIMD_AVX)
        return to_d8(_mm256_setr_ps(p[0][off], p[1][off], p[2][off], p[3][off], p[4][off], p[5][off], p[6][off], p[7][off]));
#else
        return to_d8(F8{_mm_setr_ps(p[0][off], p[1][off], p[2][off], p[3][off]),
                        _mm_setr_ps(p[4][off], p[5][off], p[6][off], p[7][off])});
#endif
    } else {
#if defined(ULCMOD_SIMD_AVX512)
        return {_mm512_setr_pd(p[0][off], p[1][off], p[2][off], p[3][off], p[4][off], p[5][off], p[6][off], p[7][off])};
#elif defined(ULCMOD_SIMD_AVX2)
        return {_mm256_setr_pd(p[0][off], p[1][off], p[2][off], p[3][off]),
                _mm256_setr_pd(p[4][off], p[5][off], p[6][off], p[7][off])};
#else
        return {{_mm_setr_pd(p[0][off], p[1][off]), _mm_setr_pd(p[2][off], p[3][off]), _mm_setr_pd(p[4][off], p[5][off]),
                 _mm_setr_pd(p[6][off], p[7][off])}};
#endif
    }
#else
    alignas(64) double v[8];
    for (int j = 0; j < 8; ++j) v[j] = scalar(p[j][off]);
    return d8_load(v);
#endif
}

// ---------------------------------------------------------------------------------------------
// Column slots: one column of a tile (8 rows) in the element type, kept in scratch memory
// between a transposing pass and a label-ordered pass. A slot takes sizeof(T) doubles
// (8 elements of sizeof(T) bytes).

#if defined(ULCMOD_SIMD_X86)
inline void u8_store(void* p, U8 v) { _mm_storeu_si128(static_cast<__m128i*>(p), v); }
#elif defined(ULCMOD_SIMD_NEON)
inline void u8_store(void* p, U8 v) { vst1q_u16(static_cast<uint16_t*>(p), v); }
#else
inline void u8_store(void* p, U8 v) {
    uint16_t* q = static_cast<uint16_t*>(p);
    for (int i = 0; i < 8; ++i) q[i] = v.v[i];
}
#endif

template <class T>
inline D8 slot_widen(const double* s) {
    if constexpr (sizeof(T) == 2)
        return to_d8(cvt16<T>(u8_load(s)));
    else if constexpr (sizeof(T) == 4)
        return to_d8(f8_load(reinterpret_cast<const float*>(s)));
    else
        return d8_load(s);
}

// The slot of column `off` of the 8 rows, element by element (tails, strided columns).
template <class T>
inline void slot_gather(const T* const p[8], int64_t off, double* s) {
    T* q = reinterpret_cast<T*>(s);
    for (int j = 0; j < 8; ++j) q[j] = p[j][off];
}

// Tiles: W neighbouring columns c.. of 8 rows (p[r] points at row r), read as 8 row vectors and
// transposed in registers; column c + j is stored to the slot at dst + j * sizeof(T).

template <class T>
struct Tile;

template <class T16>
struct Tile16 {
    static constexpr int W = 8;
    static void load(const T16* const p[8], int64_t c, double* dst) {
        U8 r[8];
        for (int j = 0; j < 8; ++j) r[j] = u8_load(p[j] + c);
        transpose8x8_u16(r);
        for (int j = 0; j < 8; ++j) u8_store(dst + 2 * j, r[j]);
    }
};
template <>
struct Tile<half_t> : Tile16<half_t> {};
template <>
struct Tile<bfloat16_t> : Tile16<bfloat16_t> {};

template <>
struct Tile<float> {
#if defined(ULCMOD_SIMD_AVX)
    static constexpr int W = 8;
    static void load(const float* const p[8], int64_t c, double* dst) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(p[j] + c);
        __m256 s[8];
        for (int h = 0; h < 8; h += 4) {  // rows h..h+3: 4x4 transposes within each 128-bit lane
            const __m256 t0 = _mm256_unpacklo_ps(r[h], r[h + 1]), t1 = _mm256_unpackhi_ps(r[h], r[h + 1]);
            const __m256 t2 = _mm256_unpacklo_ps(r[h + 2], r[h + 3]), t3 = _mm256_unpackhi_ps(r[h + 2], r[h + 3]);
            s[h] = _mm256_shuffle_ps(t0, t2, 0x44);      // cols 0 | 4
            s[h + 1] = _mm256_shuffle_ps(t0, t2, 0xEE);  // cols 1 | 5
            s[h + 2] = _mm256_shuffle_ps(t1, t3, 0x44);  // cols 2 | 6
            s[h + 3] = _mm256_shuffle_ps(t1, t3, 0xEE);  // cols 3 | 7
        }
        float* out = reinterpret_cast<float*>(dst);
        for (int j = 0; j < 4; ++j) {
            f8_store(out + 8 * j, _mm256_permute2f128_ps(s[j], s[j + 4], 0x20));
            f8_store(out + 8 * (j + 4), _mm256_permute2f128_ps(s[j], s[j + 4], 0x31));
        }
    }
#elif defined(ULCMOD_SIMD_SSE2) || defined(ULCMOD_SIMD_NEON)
    static constexpr int W = 4;
    static void load(const float* const p[8], int64_t c, double* dst) {
#if defined(ULCMOD_SIMD_SSE2)
        __m128 top[4], bot[4];
        for (int j = 0; j < 4; ++j) {
            top[j] = _mm_loadu_ps(p[j] + c);
            bot[j] = _mm_loadu_ps(p[j + 4] + c);
        }
        _MM_TRANSPOSE4_PS(top[0], top[1], top[2], top[3]);
        _MM_TRANSPOSE4_PS(bot[0], bot[1], bot[2], bot[3]);
#else
        float32x4_t top[4], bot[4];
        for (int h = 0; h < 2; ++h) {
            float32x4_t* q = h ? bot : top;
            float32x4_t r[4];
            for (int j = 0; j < 4; ++j) r[j] = vld1q_f32(p[4 * h + j] + c);
            const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
            const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
            q[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
            q[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
            q[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
            q[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
        }
#endif
        float* out = reinterpret_cast<float*>(dst);
        for (int j = 0; j < 4; ++j) f8_store(out + 8 * j, F8{top[j], bot[j]});
    }
#else
    static constexpr int W = 1;
    static void load(const float* const p[8], int64_t c, double* dst) { slot_gather(p, c, dst); }
#endif
};

template <>
struct Tile<double> {
#if defined(ULCMOD_SIMD_AVX512)
    static constexpr int W = 8;
    static void load(const double* const p[8], int64_t c, double* dst) {
        __m512d t[8];
        for (int j = 0; j < 8; j += 2) {  // pairs of rows, per 128-bit lane: cols (0,2,4,6), (1,3,5,7)
            const __m512d a = _mm512_loadu_pd(p[j] + c), b = _mm512_loadu_pd(p[j + 1] + c);
            t[j / 2] = _mm512_unpacklo_pd(a, b);
            t[4 + j / 2] = _mm512_unpackhi_pd(a, b);
        }
        for (int h = 0; h < 8; h += 4) {  // h = 0: even columns, h = 4: odd columns
            const __m512d u0 = _mm512_shuffle_f64x2(t[h], t[h + 1], 0x88);  // lanes 0,2 | 0,2
            const __m512d u1 = _mm512_shuffle_f64x2(t[h], t[h + 1], 0xDD);  // lanes 1,3 | 1,3
            const __m512d u2 = _mm512_shuffle_f64x2(t[h + 2], t[h + 3], 0x88);
            const __m512d u3 = _mm512_shuffle_f64x2(t[h + 2], t[h + 3], 0xDD);
            const int odd = h ? 1 : 0;
            _mm512_storeu_pd(dst + 8 * (0 + odd), _mm512_shuffle_f64x2(u0, u2, 0x88));
            _mm512_storeu_pd(dst + 8 * (4 + odd), _mm512_shuffle_f64x2(u0, u2, 0xDD));
            _mm512_storeu_pd(dst + 8 * (2 + odd), _mm512_shuffle_f64x2(u1, u3, 0x88));
            _mm512_storeu_pd(dst + 8 * (6 + odd), _mm512_shuffle_f64x2(u1, u3, 0xDD));
        }
    }
#elif defined(ULCMOD_SIMD_AVX2)
    static constexpr int W = 4;
    static void load(const double* const p[8], int64_t c, double* dst) {
        for (int h = 0; h < 2; ++h) {  // rows 4h..4h+3: a 4x4 transpose; rows 0-3 then 4-7 of a slot
            const double* const* r = p + 4 * h;
            const __m256d a = _mm256_loadu_pd(r[0] + c), b = _mm256_loadu_pd(r[1] + c);
            const __m256d d = _mm256_loadu_pd(r[2] + c), e = _mm256_loadu_pd(r[3] + c);
            const __m256d t0 = _mm256_unpacklo_pd(a, b), t1 = _mm256_unpackhi_pd(a, b);
            const __m256d t2 = _mm256_unpacklo_pd(d, e), t3 = _mm256_unpackhi_pd(d, e);
            _mm256_storeu_pd(dst + 0 + 4 * h, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(dst + 8 + 4 * h, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(dst + 16 + 4 * h, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(dst + 24 + 4 * h, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
    }
#elif defined(ULCMOD_SIMD_SSE2) || defined(ULCMOD_SIMD_NEON)
    static constexpr int W = 2;
    static void load(const double* const p[8], int64_t c, double* dst) {
        for (int j = 0; j < 4; ++j) {
            const D2 a = d2_load(p[2 * j] + c), b = d2_load(p[2 * j + 1] + c);
#if defined(ULCMOD_SIMD_SSE2)
            d2_store(dst + 2 * j, _mm_unpacklo_pd(a, b));
            d2_store(dst + 8 + 2 * j, _mm_unpackhi_pd(a, b));
#else
            d2_store(dst + 2 * j, vzip1q_f64(a, b));
            d2_store(dst + 8 + 2 * j, vzip2q_f64(a, b));
#endif
        }
    }
#else
    static constexpr int W = 1;
    static void load(const double* const p[8], int64_t c, double* dst) { slot_gather(p, c, dst); }
#endif
};

}  // namespace
}  // namespace ULCMOD_ISA_NS
}  // namespace ulcmod
