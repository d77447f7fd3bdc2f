#include "balanced_kmeans.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "parallel.hpp"
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
          heaps_(static_cast<size_t>(K) * K), to_sink_(K, 0), via_x_(K, 0),
          potential_(K + 2, 0.0), dist_(K + 2), prev_(K + 2), settled_(K + 2) {}

    std::vector<int32_t> run() {
        for (int64_t i = 0; i < n_; ++i) insert(i);
        return labels_;
    }

private:
    struct Entry {
        double key;
        int64_t point;
        uint32_t version;
        bool operator>(const Entry& o) const { return key > o.key; }
    };
    static constexpr int kSource = -1;

    int X() const { return K_; }
    int T() const { return K_ + 1; }

    // Cheapest valid move a -> b (stale heap entries dropped), or nullptr.
    const Entry* top(int a, int b) {
        auto& h = heaps_[static_cast<size_t>(a) * K_ + b];
        while (!h.empty()) {
            const Entry& e = h.front();
            if (labels_[e.point] == a && version_[e.point] == e.version) return &e;
            std::pop_heap(h.begin(), h.end(), std::greater<Entry>());
            h.pop_back();
        }
        return nullptr;
    }

    void place(int64_t p, int k) {
        labels_[p] = k;
        const uint32_t v = ++version_[p];
        const double* c = cost_ + p * K_;
        for (int b = 0; b < K_; ++b) {
            if (b == k) continue;
            auto& h = heaps_[static_cast<size_t>(k) * K_ + b];
            h.push_back({c[b] - c[k], p, v});
            std::push_heap(h.begin(), h.end(), std::greater<Entry>());
        }
    }

    void relax(int u, int v, double reduced) {
        const double d = dist_[u] + std::max(reduced, 0.0);  // clamp rounding below zero
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
                for (int b = 0; b < K_; ++b) {
                    if (b == u || settled_[b]) continue;
                    if (const Entry* e = top(u, b)) relax(u, b, e->key + potential_[u] - potential_[b]);
                }
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
                place(top(u, v)->point, v);
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
    std::vector<int64_t> to_sink_;
    std::vector<char> via_x_;
    int64_t x_used_ = 0;  // flow X -> sink, always equal to the number of via_x_ set
    std::vector<double> potential_, dist_;
    std::vector<int> prev_;
    std::vector<char> settled_;
};

double squared_distance(const double* a, const double* b, int64_t d) {
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) {
        const double t = a[j] - b[j];
        s += t * t;
    }
    return s;
}

void distances(const double* X, int64_t n, int64_t d, const std::vector<double>& centers, int K,
               std::vector<double>& out) {
    parallel_for(n, 256, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
            for (int k = 0; k < K; ++k)
                out[i * K + k] = squared_distance(X + i * d, centers.data() + k * d, d);
    });
}

// Greedy k-means++: each new centre is the best of 2 + log K candidates drawn by D^2 weighting.
std::vector<double> kmeans_plus_plus(const double* X, int64_t n, int64_t d, int K, uint64_t& rng) {
    std::vector<double> centers(static_cast<size_t>(K) * d);
    const int trials = 2 + static_cast<int>(std::log(static_cast<double>(K)));
    const int64_t first = static_cast<int64_t>(next_below(rng, n));
    std::copy(X + first * d, X + first * d + d, centers.begin());
    std::vector<double> closest(n), candidate(n), best_candidate(n);
    for (int64_t i = 0; i < n; ++i) closest[i] = squared_distance(X + i * d, centers.data(), d);
    for (int k = 1; k < K; ++k) {
        double total = 0.0;
        for (double v : closest) total += v;
        double best_potential = kInf;
        int64_t best_index = 0;
        for (int t = 0; t < trials; ++t) {
            int64_t pick = next_below(rng, n);
            if (total > 0.0) {
                double target = next_unit(rng) * total, acc = 0.0;
                for (pick = 0; pick < n - 1; ++pick) {
                    acc += closest[pick];
                    if (acc > target) break;
                }
            }
            double potential = 0.0;
            for (int64_t i = 0; i < n; ++i) {
                candidate[i] = std::min(closest[i], squared_distance(X + i * d, X + pick * d, d));
                potential += candidate[i];
            }
            if (potential < best_potential) {
                best_potential = potential;
                best_index = pick;
                best_candidate.swap(candidate);
            }
        }
        std::copy(X + best_index * d, X + best_index * d + d, centers.begin() + k * d);
        closest.swap(best_candidate);
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
    res.centers = kmeans_plus_plus(X, n, d, K, rng);
    std::vector<double> dist(static_cast<size_t>(n) * K), next(res.centers.size());
    std::vector<int64_t> sizes(K);
    auto assign = [&]() {
        distances(X, n, d, res.centers, K, dist);
        return balanced ? balanced_assignment(dist.data(), n, K) : nearest_assignment(dist, n, K);
    };
    for (res.n_iter = 1; res.n_iter <= max_iter; ++res.n_iter) {
        std::vector<int32_t> labels = assign();
        const bool same = labels == res.labels;
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
    // Labels consistent with the final centres (a no-op after strict convergence).
    res.labels = assign();
    res.inertia = 0.0;
    for (int64_t i = 0; i < n; ++i) res.inertia += dist[i * K + res.labels[i]];
    return res;
}

}  // namespace

std::vector<int32_t> balanced_assignment(const double* cost, int64_t n, int K) {
    return BalancedAssigner(cost, n, K).run();
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
    KMeansResult best;
    for (int run = 0; run < n_init; ++run) {
        KMeansResult r = lloyd(X, n, d, K, balanced, max_iter, tol_abs, next_u64(rng));
        if (run == 0 || r.inertia < best.inertia) best = std::move(r);
    }
    return best;
}

}  // namespace ulcmod
