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

// key[a*K+b]: least cost[p,b] - cost[p,a] over the points p labelled a, reached at point[a*K+b]
// (both already filled with +inf and -1; (a, a) is left meaningless). Returns max |cost|.
ULCMOD_SIMD_CLONES
double scan_fronts(const double* cost, const int32_t* labels, int64_t n, int K, double* key, int64_t* point) {
    double scale = 0.0;
    for (int64_t p = 0; p < n; ++p) {
        const double* c = cost + p * K;
        const double ca = c[labels[p]];
        double* k_row = key + static_cast<size_t>(labels[p]) * K;
        int64_t* p_row = point + static_cast<size_t>(labels[p]) * K;
#pragma omp simd reduction(max : scale)
        for (int b = 0; b < K; ++b) {  // branch-free, so it vectorises
            const double k = c[b] - ca;
            const bool better = k < k_row[b];
            p_row[b] = better ? p : p_row[b];
            k_row[b] = better ? k : k_row[b];
            scale = std::max(scale, std::abs(c[b]));
        }
    }
    return scale;
}

// Makes a labelling with the balanced sizes (q = n / K or q + 1, r = n mod K of them q + 1)
// optimal, as a min-cost flow, by cancelling negative cycles in its residual graph: a flow is
// of least cost exactly when that graph has none. The graph is that of the K clusters: edge
// a -> b is the cheapest move of a point of a to b, at cost[p,b] - cost[p,a] (the pair's
// "front"), and node X lends the larger size: edge u -> X when u may grow to q + 1, X -> v when
// v may shrink to q, so a cycle through X moves one point along a path from such a v to such
// a u.
//
// Lloyd's steps start it from the last step's labels, where only the points whose best cluster
// changed need to move; the first starts from greedy_balanced. Each pair keeps a short sorted list of its cheapest
// moves, so a front that leaves is mostly replaced without a scan of the cluster.
class CycleCanceller {
public:
    CycleCanceller(const double* cost, int64_t n, int K, std::vector<int32_t> labels)
        : cost_(cost), K_(K), q_(n / K), r_(n % K), candidates_per_pair_(std::clamp<int64_t>(q_ / 64, 8, 64)),
          labels_(std::move(labels)), version_(n, 0), pos_(n), members_(K),
          front_key_(static_cast<size_t>(K) * K, kInf), front_point_(static_cast<size_t>(K) * K, -1),
          candidates_(static_cast<size_t>(K) * K), bound_(static_cast<size_t>(K) * K, -kInf), dist_(K + 1),
          prev_(K + 1), seen_(K + 1) {
        for (auto& m : members_) m.reserve(static_cast<size_t>(q_) + 2);  // q + 2 in mid-cycle
        for (int64_t p = 0; p < n; ++p) {
            pos_[p] = static_cast<int64_t>(members_[labels_[p]].size());
            members_[labels_[p]].push_back(p);
        }
        const double scale = scan_fronts(cost, labels_.data(), n, K, front_key_.data(), front_point_.data());
        // Above the rounding of a cycle's sum of at most K + 1 differences of costs.
        eps_ = 1e-15 * (K + 1) * scale;
    }

    // Optimal labels (up to cycles shorter than rounding); not optimal if interrupted.
    std::vector<int32_t> run() {
        for (int64_t searches = 1; cancel_short_cycles() || cancel_negative_cycle(); ++searches)
            if (searches % 256 == 0 && interrupt_requested()) break;
        return labels_;
    }

private:
    struct Entry {
        double key;
        int64_t point;
        uint32_t version;  // the point's moves when the entry was made: older entries are stale
        bool operator<(const Entry& o) const { return key < o.key; }
    };

    int X() const { return K_; }
    size_t pair(int a, int b) const { return static_cast<size_t>(a) * K_ + b; }
    double key(int64_t p, int a, int b) const { return cost_[p * K_ + b] - cost_[p * K_ + a]; }

    bool current(const Entry& e, int a) const { return labels_[e.point] == a && version_[e.point] == e.version; }

    // Refills the candidates of (a, b) with the cheapest moves of a's members to b.
    void scan(int a, int b) {
        const size_t ab = pair(a, b);
        auto& c = candidates_[ab];
        c.clear();
        bound_[ab] = kInf;
        for (const int64_t p : members_[a]) offer(ab, {key(p, a, b), p, version_[p]});
    }

    // A member of a (met by scan, or new) whose move to b is cheaper than the bound joins the
    // sorted candidates; past candidates_per_pair_ the dearest drops out and its cost becomes
    // the bound.
    void offer(size_t ab, const Entry& e) {
        if (!(e.key < bound_[ab])) return;
        auto& c = candidates_[ab];
        c.insert(std::upper_bound(c.begin(), c.end(), e), e);
        if (static_cast<int64_t>(c.size()) > candidates_per_pair_) {
            bound_[ab] = c.back().key;
            c.pop_back();
        }
    }

    // The front of (a, b) is its cheapest current candidate (stale ones, of points that left,
    // are dropped); none left: a scan of a's members refills them.
    void next_front(int a, int b) {
        const size_t ab = pair(a, b);
        auto& c = candidates_[ab];
        auto first = std::find_if(c.begin(), c.end(), [&](const Entry& e) { return current(e, a); });
        c.erase(c.begin(), first);
        if (c.empty() && bound_[ab] != kInf) scan(a, b);  // kInf: a's members were all in it
        front_key_[ab] = c.empty() ? kInf : c.front().key;
        front_point_[ab] = c.empty() ? -1 : c.front().point;
    }

    void move(int64_t p, int k) {
        const int from = labels_[p];
        auto& out = members_[from];
        pos_[out.back()] = pos_[p];
        out[pos_[p]] = out.back();
        out.pop_back();
        labels_[p] = k;
        const uint32_t version = ++version_[p];
        pos_[p] = static_cast<int64_t>(members_[k].size());
        members_[k].push_back(p);
        for (int b = 0; b < K_; ++b) {
            if (b != from && front_point_[pair(from, b)] == p) next_front(from, b);
            if (b == k) continue;
            const size_t kb = pair(k, b);
            const Entry e{key(p, k, b), p, version};
            offer(kb, e);
            if (e.key < front_key_[kb]) front_key_[kb] = e.key, front_point_[kb] = p;
        }
    }

    bool may_grow(int a) const { return r_ > 0 && static_cast<int64_t>(members_[a].size()) == q_; }
    bool may_shrink(int a) const { return r_ > 0 && static_cast<int64_t>(members_[a].size()) == q_ + 1; }

    // Most negative cycles are swaps a <-> b, or a single move v -> u through X: one sweep over
    // the pairs cancels those it finds, far cheaper than a Bellman-Ford search per cycle.
    bool cancel_short_cycles() {
        bool any = false;
        for (int a = 0; a < K_; ++a)
            for (int b = a + 1; b < K_; ++b) {
                if (front_key_[pair(a, b)] + front_key_[pair(b, a)] < -eps_) {
                    const int64_t p = front_point_[pair(a, b)], o = front_point_[pair(b, a)];
                    move(p, b);
                    move(o, a);
                    any = true;
                }
            }
        for (int v = 0; v < K_; ++v)
            for (int u = 0; u < K_; ++u)
                if (u != v && may_shrink(v) && may_grow(u) && front_key_[pair(v, u)] < -eps_) {
                    move(front_point_[pair(v, u)], u);
                    any = true;
                }
        return any;
    }

    // A node on a cycle of the predecessor links, or -1. Such a cycle is negative: each link
    // was set by a strict relaxation.
    int on_predecessor_cycle() {
        std::fill(seen_.begin(), seen_.end(), -1);
        for (int s = 0; s <= K_; ++s) {
            int v = s;
            while (v >= 0 && seen_[v] < 0) {
                seen_[v] = s;
                v = prev_[v];
            }
            if (v >= 0 && seen_[v] == s) return v;
        }
        return -1;
    }

    // Bellman-Ford from all nodes at once, stopped as soon as the predecessor links close a
    // cycle (Cherkassky and Goldberg's check: far sooner than after K + 1 rounds); cancels it.
    bool cancel_negative_cycle() {
        std::fill(dist_.begin(), dist_.end(), 0.0);
        std::fill(prev_.begin(), prev_.end(), -1);
        bool relaxed = false;
        auto relax = [&](int u, int v, double w) {
            if (dist_[u] + w < dist_[v] - eps_) {
                dist_[v] = dist_[u] + w;
                prev_[v] = u;
                relaxed = true;
            }
        };
        int start = -1;
        while (start < 0) {
            relaxed = false;
            for (int a = 0; a < K_; ++a) {
                const double* key = front_key_.data() + pair(a, 0);
                for (int b = 0; b < K_; ++b)  // an empty cluster's fronts are +inf and never relax
                    if (b != a) relax(a, b, key[b]);
                if (may_grow(a)) relax(a, X(), 0.0);
            }
            for (int b = 0; b < K_; ++b)
                if (may_shrink(b)) relax(X(), b, 0.0);
            if (!relaxed) return false;  // shortest paths found: no negative cycle
            start = on_predecessor_cycle();
        }
        std::vector<std::pair<int64_t, int>> moves;  // picked before any point moves
        double weight = 0.0;
        for (int v = start;;) {
            const int u = prev_[v];
            if (u != X() && v != X()) {
                moves.emplace_back(front_point_[pair(u, v)], v);
                weight += front_key_[pair(u, v)];
            }
            if ((v = u) == start) break;
        }
        if (!(weight < -eps_)) return false;
        for (const auto& [p, k] : moves) move(p, k);
        return true;
    }

    const double* cost_;
    int K_;
    int64_t q_, r_;
    int64_t candidates_per_pair_;  // more for larger clusters, whose scans cost more
    double eps_;
    std::vector<int32_t> labels_;
    std::vector<uint32_t> version_;
    std::vector<int64_t> pos_;  // each point's index in its cluster's members_
    std::vector<std::vector<int64_t>> members_;
    std::vector<double> front_key_;     // [a*K+b]: least cost of moving a point of a to b
    std::vector<int64_t> front_point_;  // and that point
    std::vector<std::vector<Entry>> candidates_;  // [a*K+b]: sorted; members not in it cost >= bound_
    std::vector<double> bound_;                   // -inf until the pair's first scan
    std::vector<double> dist_;
    std::vector<int> prev_, seen_;
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

// Points and centres per block of distance_rows: 4 x 8 accumulators fill the vector registers,
// enough independent sums to keep the FMA units busy.
constexpr int kBlockPoints = 4, kBlockCentres = 8;

// out[i * T + t] = |x_i - c_t|^2 for points [i0, i1), as |x|^2 + |c|^2 - 2 x.c (clamped at 0).
// C_t is C transposed and zero-padded to Tp columns (d x Tp, Tp a multiple of kBlockCentres):
// each x_ij scales a row of it, so no horizontal sums are needed whatever d is (16 PCA scores
// or hundreds of weights).
ULCMOD_SIMD_CLONES
void distance_rows(const double* X, const double* x_norm, int64_t i0, int64_t i1, int64_t d,
                   const double* C_t, int64_t Tp, const double* c_norm, int T, double* out) {
    for (int64_t i = i0; i < i1; i += kBlockPoints) {
        int64_t rows[kBlockPoints];  // a short last block repeats its last point
        for (int u = 0; u < kBlockPoints; ++u) rows[u] = std::min(i + u, i1 - 1);
        for (int t0 = 0; t0 < T; t0 += kBlockCentres) {
            double acc[kBlockPoints][kBlockCentres];
#pragma GCC unroll 4
            for (int u = 0; u < kBlockPoints; ++u)
#pragma omp simd
                for (int w = 0; w < kBlockCentres; ++w) acc[u][w] = 0.0;
            for (int64_t j = 0; j < d; ++j) {
                const double* c = C_t + j * Tp + t0;
#pragma GCC unroll 4
                for (int u = 0; u < kBlockPoints; ++u) {
                    const double x = X[rows[u] * d + j];
#pragma omp simd
                    for (int w = 0; w < kBlockCentres; ++w) acc[u][w] += x * c[w];
                }
            }
            const int width = std::min(kBlockCentres, T - t0);
            for (int u = 0; u < kBlockPoints; ++u) {
                double* o = out + rows[u] * T + t0;
                const double xn = x_norm[rows[u]];
#pragma omp simd
                for (int w = 0; w < width; ++w) o[w] = std::max(0.0, xn + c_norm[t0 + w] - 2.0 * acc[u][w]);
            }
        }
    }
}

// Squared distances of all n points to the T rows of C (n x T, row-major), multi-threaded.
void distances(const double* X, const std::vector<double>& x_norm, int64_t n, int64_t d,
               const double* C, int T, std::vector<double>& out) {
    const int64_t Tp = (T + kBlockCentres - 1) / kBlockCentres * kBlockCentres;
    std::vector<double> c_norm = row_norms(C, T, d), C_t(static_cast<size_t>(d * Tp), 0.0);
    for (int t = 0; t < T; ++t)
        for (int64_t j = 0; j < d; ++j) C_t[j * Tp + t] = C[t * d + j];
    out.resize(static_cast<size_t>(n) * T);
    // Threads only for at least 2^24 multiply-adds each (about a millisecond): a Lloyd step on
    // IterD's 7,000 x 16 scores is a tenth of that, and a parallel region per step waits on any
    // thread that another process holds off its core (10x slower with one of 2 cores busy).
    const int64_t min_rows = std::max<int64_t>(64, (int64_t{1} << 24) / std::max<int64_t>(1, T * d));
    parallel_for(n, min_rows, [&](int64_t begin, int64_t end) {
        distance_rows(X, x_norm.data(), begin, end, d, C_t.data(), Tp, c_norm.data(), T, out.data());
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

// Each point in turn to its cheapest cluster with room (q + 1 for the first r clusters to
// fill that far, q after): balanced, and a start close enough to optimal for CycleCanceller.
std::vector<int32_t> greedy_balanced(const double* cost, int64_t n, int K) {
    const int64_t q = n / K, r = n % K;
    std::vector<int32_t> labels(n);
    std::vector<int64_t> sizes(K, 0);
    int64_t larger = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double* row = cost + i * K;
        int best = -1;
        for (int k = 0; k < K; ++k)
            if ((sizes[k] < q || (sizes[k] == q && larger < r)) && (best < 0 || row[k] < row[best])) best = k;
        if (sizes[best]++ == q) ++larger;
        labels[i] = best;
    }
    return labels;
}

// Sum over the features of their variance, two-pass, reading rows in order (a walk down each
// column misses the cache on every row).
ULCMOD_SIMD_CLONES
double total_variance(const double* X, int64_t n, int64_t d) {
    std::vector<double> mu(d, 0.0), ss(d, 0.0);
    double* m = mu.data();
    double* v = ss.data();
    for (int64_t i = 0; i < n; ++i) {
        const double* x = X + i * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) m[j] += x[j];
    }
    for (int64_t j = 0; j < d; ++j) m[j] /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {
        const double* x = X + i * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) v[j] += (x[j] - m[j]) * (x[j] - m[j]);
    }
    double total = 0.0;
    for (int64_t j = 0; j < d; ++j) total += v[j] / static_cast<double>(n);
    return total;
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
        if (!balanced) return nearest_assignment(dist, n, K);
        // Warm start: the centres move little between steps, so few of the last labels change.
        std::vector<int32_t> start = res.labels.empty() ? greedy_balanced(dist.data(), n, K) : res.labels;
        return CycleCanceller(dist.data(), n, K, std::move(start)).run();
    };
    bool same = false;
    for (res.n_iter = 1; res.n_iter <= max_iter; ++res.n_iter) {
        std::vector<int32_t> labels = assign();
        if (interrupt_requested()) return res;  // labels may not be optimal; kmeans() throws
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

std::vector<int32_t> balanced_assignment(const double* cost, int64_t n, int K, std::vector<int32_t> start) {
    if (start.empty()) start = greedy_balanced(cost, n, K);
    std::vector<int32_t> labels = CycleCanceller(cost, n, K, std::move(start)).run();
    check_interrupt();
    return labels;
}

KMeansResult kmeans(const double* X, int64_t n, int64_t d, int K, bool balanced, int n_init,
                    int max_iter, double tol, uint64_t seed) {
    const double mean_var = total_variance(X, n, d);
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
