// The acceptance rule of an IterD move, shared by every backend (host code and CUDA kernels).
//
// During one side's sweep the table T (R for neurons, C for samples) is fixed and only the
// scalars D, P, H and the module sizes change. Moving a row with table entries t from module a
// to module b raises L = K D / (P H) by more than tol |L| iff
//
//     t[b] - t[a] > c[a][b],   c[a][b] = (L + tol |L|) / K * P_ab * H_ab - D
//
// with P_ab = P - m_a + m_b and H_ab = H - 1/(n_a m_a) + 1/((n_a - 1) m_a) - 1/(n_b m_b)
// + 1/((n_b + 1) m_b) (n: this side's sizes, m: the other side's). The K x K matrix c is computed
// once per round, so scoring a row costs K subtractions and compares, done for every row in
// parallel. The rearranged test rounds differently from the exact one, so it is padded by a
// slack that can only over-report; the host re-scores every reported row exactly (Scorer in
// iterd.cpp) before moving it, so results never depend on the backend's arithmetic.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define ULCMOD_HOST_DEVICE __host__ __device__
#else
#define ULCMOD_HOST_DEVICE
#endif

namespace ulcmod {

// Relative padding of the filter: rounding in c and in t[b] - t[a] is a few ulps (~1e-15
// relative), so 1e-12 over-reports only rows within a hair of improving and never misses one.
constexpr double kFilterSlack = 1e-12;

// The global state of one side's sweep.
struct SweepScalars {
    int K;
    double D, P, H, tol;
    const int64_t* counts;  // this side's module sizes
    const int64_t* other;   // the other side's module sizes
};

struct MoveRule {
    int K = 0;
    std::vector<double> c;        // K x K, row a = leaving module a; +inf on the diagonal
    std::vector<uint8_t> leave;   // leave[a]: module a keeps a member when one leaves
    double slack = 0.0;           // absolute part of the padding: kFilterSlack * (|D| + max |c|)
};

MoveRule make_rule(const SweepScalars& s);

// Per module a: bound on how much the margin of a row labelled a can have grown from rule `from`
// to rule `to` (same table, same label): such a row whose margin under `from` is <= -drift[a]
// cannot improve under `to`. Moves change some modules' entries of c far more than others'.
std::vector<double> rule_drift(const MoveRule& from, const MoveRule& to);

// Padded margin of a row with entries t and label a: the largest t[b] - t[a] - c[a][b] over b,
// plus the slack. <= 0 proves no move of the row improves L; > 0 means it may (or nearly does).
// c is the rule's K x K matrix (device code passes its own copy of it). Each b contributes
// t[b] - c[a][b] + kFilterSlack |t[b]|; the row's own terms are added once at the end.
template <class V>
ULCMOD_HOST_DEVICE inline V margin_term(V tb, V cab) {
    return tb - cab + kFilterSlack * (tb < 0 ? -tb : tb);
}

ULCMOD_HOST_DEVICE inline double row_margin(const double* t, int a, const double* c, int K,
                                            double slack) {
    const double* ca = c + static_cast<int64_t>(a) * K;
    double best = -INFINITY;
    int b = 0;
#if defined(__GNUC__) && !defined(__CUDA_ARCH__)
    // Four lanes at a time: compilers do not vectorise a max reduction on their own (it is not
    // associative under their NaN rules), so the lanes are written out as a vector type.
    typedef double v4d __attribute__((vector_size(32)));
    v4d acc = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (; b + 4 <= K; b += 4) {
        v4d tb, cb;
        __builtin_memcpy(&tb, t + b, sizeof tb);
        __builtin_memcpy(&cb, ca + b, sizeof cb);
        const v4d m = margin_term(tb, cb);
        acc = m > acc ? m : acc;
    }
    for (int j = 0; j < 4; ++j) best = acc[j] > best ? acc[j] : best;
#endif
    for (; b < K; ++b) {
        const double m = margin_term(t[b], ca[b]);
        best = m > best ? m : best;
    }
    return best - t[a] + kFilterSlack * fabs(t[a]) + slack;
}

inline double row_margin(const double* t, int a, const MoveRule& rule) {
    return row_margin(t, a, rule.c.data(), rule.K, rule.slack);
}

}  // namespace ulcmod
