// k-means with an optional exact balance constraint: every cluster holds floor(n/K) or
// ceil(n/K) points. The constrained assignment step is solved exactly as a min-cost flow on
// the small graph of clusters, warm-started from the last step (see balanced_assignment).
#pragma once

#include <cstdint>
#include <vector>

namespace ulcmod {

// Labels minimising sum_i cost[i, label_i] (cost is n x K, row-major) subject to every cluster
// holding floor(n/K) or ceil(n/K) points. Exact up to floating-point rounding. n < 2^31.
//
// A min-cost flow, solved by cancelling negative cycles in the graph of the K clusters (plus
// one node that hands out the n mod K larger sizes), where an edge is the cheapest move of a
// point between two clusters. It starts from `start`, a labelling with those sizes (the
// caller checks), or when empty from a greedy one; from a nearly optimal start, such as the
// last Lloyd step's labels, only a few points move. Each move costs O(K) plus, now and then,
// a scan of one cluster; each cycle search O(K^3) at worst.
std::vector<int32_t> balanced_assignment(const double* cost, int64_t n, int K, std::vector<int32_t> start = {});

struct KMeansResult {
    std::vector<double> centers;  // K x d
    int64_t d = 0;
    std::vector<int32_t> labels;
    double inertia = 0.0;
    int n_iter = 0;
    bool converged = false;
};

// Lloyd's algorithm from greedy k-means++ seeds, best of n_init runs by inertia. `tol` is
// relative to the mean per-feature variance of X (as scikit-learn). `balanced` selects the
// exact size-constrained assignment; otherwise nearest centre, with empty clusters refilled by
// the points farthest from their centres. X is n x d, row-major, float64.
KMeansResult kmeans(const double* X, int64_t n, int64_t d, int K, bool balanced, int n_init,
                    int max_iter, double tol, uint64_t seed);

}  // namespace ulcmod
