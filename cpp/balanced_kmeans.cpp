#include "balanced_kmeans.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "interrupt.hpp"
#include "parallel.hpp"
#include "simd_clones.hpp"
#include "random.hpp"

namespace ulcmod {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Min-cost flow source -> points -> clusters -> sink, where every cluster sends up to q = n / K
// units straight to the sink and at most one more through node X, which passes r = n mod K
// units to the sink. Only the cluster-level residual graph is searched: a residual path
// cluster a -> point p -> cluster b means "move p from a to b" at cost cost[p,b] - cost[p,a].
class BalancedAssigner {
public:
    BalancedAssigner(const double* cost, int64_t n, int K)
        : cost_(cost), n_(n), K_(K), q_(n / K), r_(n % K), labels_(n, -1), version_(n, 0),
          heaps_(static_cast<size_t>(K) * K), fronts_(static_cast<size_t>(K) * K, Entry{kInf, -1, 0}),
          to_sink_(K, 0), via_x_(K, 0),
          potential_(K + 2, 0.0), dist_(K + 2), prev_(K + 2), settled_(K + 2) {
        for (auto& h : heaps_) h.reserve(static_cast<size_t>(q_ + 1) * 2);
    }

    // Labels of all points; incomplete (unplaced points are -1) if interrupted.
    std::vector<int32_t> run() {
        for (int64_t i = 0; i < n_; ++i) {
            if (i % 256 == 0 && interrupt_requested()) break;
            insert(i);
        }
        return labels_;
    }

private:
    struct Entry {  // 16 bytes: n < 2^31 points (checked by the caller)
        double key;
        int32_t point;
        uint32_t version;
        bool operator>(const Entry& o) const { return key > o.key; }
    };
    static constexpr int kSource = -1;

    int X() const { return K_; }
    int T() const { return K_ + 1; }

    bool valid(const Entry& e, int a) const {
        return labels_[e.point] == a && version_[e.point] == e.version;
    }

    // Re-establish fronts_[ab] after its point left cluster a: drop stale heap entries.
    void refresh_front(size_t ab, int a) {
        auto& h = heaps_[ab];
        while (!h.empty() && !valid(h.front(), a)) {
            std::pop_heap(h.begin(), h.end(), std::greater<Entry>());
            h.pop_back();
        }
        fronts_[ab] = h.empty() ? Entry{kInf, -1, 0} : h.front();
    }

    // Move (or first place) point p into cluster k. fronts_ mirrors every heap's front and is
    // kept valid, so Dijkstra reads move costs from one compact K x K array.
    void place(int64_t p, int k) {
        const int from = labels_[p];
        labels_[p] = k;
        const uint32_t v = ++version_[p];
        if (from >= 0)
            for (int b = 0; b < K_; ++b) {
                const size_t ab = static_cast<size_t>(from) * K_ + b;
                if (fronts_[ab].point == p) refresh_front(ab, from);
            }
        const double* c = cost_ + p * K_;
        for (int b = 0; b < K_; ++b) {
            if (b == k) continue;
            const size_t kb = static_cast<size_t>(k) * K_ + b;
            const Entry e{c[b] - c[k], static_cast<int32_t>(p), v};
            auto& h = heaps_[kb];
            h.push_back(e);
            std::push_heap(h.begin(), h.end(), std::greater<Entry>());
            if (e.key < fronts_[kb].key) fronts_[kb] = e;
        }
    }

    void relax(int u, int v, double reduced) {
        const double d = dist_[u] + std::max(reduced, 0.0);  // clamp rounding below zero; inf stays inf
        if (d < dist_[v]) {
            dist_[v] = d;
            prev_[v] = u;
        }
    }

    void insert(int64_t i) {
        const int V = K_ + 2;
        const double* c = cost_ + i * K_;
        std::fill(dist_.begin(), dist_.end(), kInf);
        std::fill(settled_.begin(), settled_.end(), 0);
        for (int k = 0; k < K_; ++k) {
            dist_[k] = c[k] - potential_[k];
            prev_[k] = kSource;
        }
        while (true) {
            int u = -1;
            for (int v = 0; v < V; ++v)
                if (!settled_[v] && dist_[v] < kInf && (u < 0 || dist_[v] < dist_[u])) u = v;
            if (u < 0 || u == T()) break;
            settled_[u] = 1;
            if (u < K_) {
                const Entry* front = fronts_.data() + static_cast<size_t>(u) * K_;
                for (int b = 0; b < K_; ++b)  // empty heaps have key +inf and never relax
                    if (b != u && !settled_[b]) relax(u, b, front[b].key + potential_[u] - potential_[b]);
                if (to_sink_[u] < q_) relax(u, T(), potential_[u] - potential_[T()]);
                if (r_ > 0 && !via_x_[u]) relax(u, X(), potential_[u] - potential_[X()]);
            } else {  // X: undo another cluster's extra unit, or use one of the r extras
                for (int k = 0; k < K_; ++k)
                    if (via_x_[k] && !settled_[k]) relax(u, k, potential_[u] - potential_[k]);
                if (x_used_ < r_) relax(u, T(), potential_[u] - potential_[T()]);
            }
        }
        const double dT = dist_[T()];
        for (int v = 0; v < V; ++v) potential_[v] += std::min(dist_[v], dT);
        // Augment from the sink backwards, so each move's heap top is still the one Dijkstra saw.
        for (int v = T(); v != kSource;) {
            const int u = prev_[v];
            if (u == kSource) {
                place(i, v);
            } else if (u < K_ && v < K_) {
                place(fronts_[static_cast<size_t>(u) * K_ + v].point, v);
            } else if (u < K_ && v == T()) {
                ++to_sink_[u];
            } else if (u < K_ && v == X()) {
                via_x_[u] = 1;
            } else if (v < K_) {  // X -> v
                via_x_[v] = 0;
            } else {  // X -> T
                ++x_used_;
            }
            v = u;
        }
    }

    const double* cost_;
    int64_t n_;
    int K_;
    int64_t q_, r_;
    std::vector<int32_t> labels_;
    std::vector<uint32_t> version_;
    std::vector<std::vector<Entry>> heaps_;  // heaps_[a*K+b]: points in a, keyed by move cost to b
    std::vector<Entry> fronts_;              // fronts_[a*K+b] == heaps_[a*K+b].front() (or empty)
    std::vector<int64_t> to_sink_;
    std::vector<char> via_x_;
    int64_t x_used_ = 0;  // flow X -> sink, always equal to the number of via_x_ set
    std::vector<double> potential_, dist_;
    std::vector<int> prev_;
    std::vector<char> settled_;
};


std::vector<double> row_norms(const double* X, int64_t n, int64_t d) {
    std::vector<double> out(n);
    for (int64_t i = 0; i < n; ++i) {
        double s = 0.0;
        for (int64_t j = 0; j < d; ++j) s += X[i * d + j] * X[i * d + j];
        out[i] = s;
    }
    return out;
}

// dot[u * 4 + w] = x_u . c_w for two points and four centres: each load feeds two FMAs.
inline void dots_2x4(const double* x0, const double* x1, const double* c0, int64_t d, double* dot) {
    const double *c1 = c0 + d, *c2 = c1 + d, *c3 = c2 + d;
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
    for (int64_t j = 0; j < d; ++j) {
        a0 += x0[j] * c0[j];
        a1 += x0[j] * c1[j];
        a2 += x0[j] * c2[j];
        a3 += x0[j] * c3[j];
        b0 += x1[j] * c0[j];
        b1 += x1[j] * c1[j];
        b2 += x1[j] * c2[j];
        b3 += x1[j] * c3[j];
    }
    dot[0] = a0, dot[1] = a1, dot[2] = a2, dot[3] = a3;
    dot[4] = b0, dot[5] = b1, dot[6] = b2, dot[7] = b3;
}

// out[i * T + t] = |x_i - c_t|^2 for points [i0, i1), as |x|^2 + |c|^2 - 2 x.c (clamped at 0).
ULCMOD_SIMD_CLONES
void distance_rows(const double* X, const double* x_norm, int64_t i0, int64_t i1, int64_t d,
                   const double* C, const double* c_norm, int T, double* out) {
    auto put = [&](int64_t i, int t, double dot) {
        out[i * T + t] = std::max(0.0, x_norm[i] + c_norm[t] - 2.0 * dot);
    };
    for (int64_t i = i0; i < i1; i += 2) {
        const int64_t i1st = i, i2nd = std::min(i + 1, i1 - 1);  // odd tail: same point twice
        int t = 0;
        for (; t + 4 <= T; t += 4) {
            double dot[8];
            dots_2x4(X + i1st * d, X + i2nd * d, C + t * d, d, dot);
            for (int w = 0; w < 4; ++w) {
                put(i1st, t + w, dot[w]);
                put(i2nd, t + w, dot[4 + w]);
            }
        }
        for (; t < T; ++t)
            for (const int64_t r : {i1st, i2nd}) {
                double dot = 0.0;
#pragma omp simd reduction(+ : dot)
                for (int64_t j = 0; j < d; ++j) dot += X[r * d + j] * C[t * d + j];
                put(r, t, dot);
            }
    }
}

// Squared distances of all n points to the T rows of C (n x T, row-major), multi-threaded.
void distances(const double* X, const std::vector<double>& x_norm, int64_t n, int64_t d,
               const double* C, int T, std::vector<double>& out) {
    std::vector<double> c_norm = row_norms(C, T, d);
    out.resize(static_cast<size_t>(n) * T);
    parallel_for(n, 64, [&](int64_t begin, int64_t end) {
        distance_rows(X, x_norm.data(), begin, end, d, C, c_norm.data(), T, out.data());
    });
}

// Greedy k-means++: each new centre is the best of 2 + log K candidates drawn by D^2 weighting,
// all candidates scored in one batched distance pass.
std::vector<double> kmeans_plus_plus(const double* X, const std::vector<double>& x_norm, int64_t n,
                                     int64_t d, int K, uint64_t& rng) {
    std::vector<double> centers(static_cast<size_t>(K) * d);
    const int trials = 2 + static_cast<int>(std::log(static_cast<double>(K)));
    const int64_t first = static_cast<int64_t>(next_below(rng, n));
    std::copy(X + first * d, X + first * d + d, centers.begin());
    std::vector<double> closest, cand(static_cast<size_t>(trials) * d), dist;
    distances(X, x_norm, n, d, centers.data(), 1, closest);
    for (int k = 1; k < K && !interrupt_requested(); ++k) {
        double total = 0.0;
        for (double v : closest) total += v;
        for (int t = 0; t < trials; ++t) {
            int64_t pick = static_cast<int64_t>(next_below(rng, n));
            if (total > 0.0) {
                const double target = next_unit(rng) * total;
                double acc = 0.0;
                for (pick = 0; pick < n - 1; ++pick) {
                    acc += closest[pick];
                    if (acc > target) break;
                }
            }
            std::copy(X + pick * d, X + pick * d + d, cand.begin() + t * d);
        }
        distances(X, x_norm, n, d, cand.data(), trials, dist);
        int best = 0;
        double best_potential = kInf;
        for (int t = 0; t < trials; ++t) {
            double potential = 0.0;
            for (int64_t i = 0; i < n; ++i) potential += std::min(closest[i], dist[i * trials + t]);
            if (potential < best_potential) {
                best_potential = potential;
                best = t;
            }
        }
        for (int64_t i = 0; i < n; ++i) closest[i] = std::min(closest[i], dist[i * trials + best]);
        std::copy(cand.begin() + best * d, cand.begin() + (best + 1) * d, centers.begin() + k * d);
    }
    return centers;
}

// Nearest centre; a cluster left empty takes the point farthest from its own centre.
std::vector<int32_t> nearest_assignment(const std::vector<double>& dist, int64_t n, int K) {
    std::vector<int32_t> labels(n);
    std::vector<int64_t> sizes(K, 0);
    for (int64_t i = 0; i < n; ++i) {
        const double* row = dist.data() + i * K;
        labels[i] = static_cast<int32_t>(std::min_element(row, row + K) - row);
        ++sizes[labels[i]];
    }
    for (int k = 0; k < K; ++k) {
        if (sizes[k] > 0) continue;
        int64_t far = -1;
        for (int64_t i = 0; i < n; ++i)
            if (sizes[labels[i]] > 1 &&
                (far < 0 || dist[i * K + labels[i]] > dist[far * K + labels[far]]))
                far = i;
        --sizes[labels[far]];
        labels[far] = k;
        ++sizes[k];
    }
    return labels;
}

KMeansResult lloyd(const double* X, int64_t n, int64_t d, int K, bool balanced, int max_iter,
                   double tol_abs, uint64_t seed) {
    uint64_t rng = seed;
    KMeansResult res;
    const std::vector<double> x_norm = row_norms(X, n, d);
    res.centers = kmeans_plus_plus(X, x_norm, n, d, K, rng);
    std::vector<double> dist, next(res.centers.size());
    std::vector<int64_t> sizes(K);
    auto assign = [&]() {
        distances(X, x_norm, n, d, res.centers.data(), K, dist);
        return balanced ? BalancedAssigner(dist.data(), n, K).run() : nearest_assignment(dist, n, K);
    };
    bool same = false;
    for (res.n_iter = 1; res.n_iter <= max_iter; ++res.n_iter) {
        std::vector<int32_t> labels = assign();
        if (interrupt_requested()) return res;  // labels may be incomplete; kmeans() throws
        same = labels == res.labels;
        res.labels.swap(labels);
        std::fill(next.begin(), next.end(), 0.0);
        std::fill(sizes.begin(), sizes.end(), 0);
        for (int64_t i = 0; i < n; ++i) {
            const int k = res.labels[i];
            ++sizes[k];
            for (int64_t j = 0; j < d; ++j) next[k * d + j] += X[i * d + j];
        }
        double shift = 0.0;
        for (int k = 0; k < K; ++k)
            for (int64_t j = 0; j < d; ++j) {
                const double v = next[k * d + j] / static_cast<double>(sizes[k]);
                shift += (v - res.centers[k * d + j]) * (v - res.centers[k * d + j]);
                res.centers[k * d + j] = v;
            }
        if (same || shift <= tol_abs) {
            res.converged = true;
            break;
        }
    }
    res.n_iter = std::min(res.n_iter, max_iter);
    // Labels consistent with the final centres; after unchanged labels they already are.
    if (!same) res.labels = assign();
    res.inertia = 0.0;  // exact differences: the dot-product form loses digits near a centre
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < d; ++j) {
            const double t = X[i * d + j] - res.centers[res.labels[i] * d + j];
            res.inertia += t * t;
        }
    return res;
}

}  // namespace

std::vector<int32_t> balanced_assignment(const double* cost, int64_t n, int K) {
    std::vector<int32_t> labels = BalancedAssigner(cost, n, K).run();
    check_interrupt();
    return labels;
}

KMeansResult kmeans(const double* X, int64_t n, int64_t d, int K, bool balanced, int n_init,
                    int max_iter, double tol, uint64_t seed) {
    double mean_var = 0.0;
    for (int64_t j = 0; j < d; ++j) {
        double s = 0.0, ss = 0.0;
        for (int64_t i = 0; i < n; ++i) s += X[i * d + j];
        const double mu = s / static_cast<double>(n);
        for (int64_t i = 0; i < n; ++i) ss += (X[i * d + j] - mu) * (X[i * d + j] - mu);
        mean_var += ss / static_cast<double>(n);
    }
    const double tol_abs = tol * mean_var / static_cast<double>(d);
    uint64_t rng = seed;
    std::vector<uint64_t> seeds(n_init);
    for (auto& sd : seeds) sd = next_u64(rng);
    // Restarts run side by side (their inner loops then run on one thread each); the lowest
    // inertia wins, the earliest run on ties, so the result does not depend on scheduling.
    std::vector<KMeansResult> runs(n_init);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (n_init > 1)
#endif
    for (int run = 0; run < n_init; ++run)
        runs[run] = lloyd(X, n, d, K, balanced, max_iter, tol_abs, seeds[run]);
    check_interrupt();  // runs cut short by Ctrl-C are incomplete
    KMeansResult best = std::move(runs[0]);
    for (int run = 1; run < n_init; ++run)
        if (runs[run].inertia < best.inertia) best = std::move(runs[run]);
    best.d = d;
    return best;
}

}  // namespace ulcmod
