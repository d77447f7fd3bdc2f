#include "move_rule.hpp"

#include <algorithm>
#include <limits>

namespace ulcmod {

MoveRule make_rule(const SweepScalars& s) {
    const int K = s.K;
    MoveRule rule;
    rule.K = K;
    rule.c.assign(static_cast<size_t>(K) * K, std::numeric_limits<double>::infinity());
    rule.leave.assign(K, 0);
    const double L = K * s.D / (s.P * s.H);
    const double scale = (L + s.tol * std::abs(L)) / K;
    std::vector<double> inv(K), leave_dH(K), join_dH(K);
    for (int k = 0; k < K; ++k) {
        const double n = static_cast<double>(s.counts[k]), m = static_cast<double>(s.other[k]);
        inv[k] = 1.0 / (n * m);
        leave_dH[k] = (s.counts[k] > 1 ? 1.0 / ((n - 1.0) * m) : 0.0) - inv[k];
        join_dH[k] = 1.0 / ((n + 1.0) * m) - inv[k];
        rule.leave[k] = s.counts[k] > 1;
    }
    double c_max = 0.0;
    for (int a = 0; a < K; ++a) {
        const double Pa = s.P - static_cast<double>(s.other[a]), Ha = s.H + leave_dH[a];
        for (int b = 0; b < K; ++b) {
            if (b == a) continue;
            const double c = scale * (Pa + static_cast<double>(s.other[b])) * (Ha + join_dH[b]) - s.D;
            rule.c[static_cast<size_t>(a) * K + b] = c;
            c_max = std::max(c_max, std::abs(c));
        }
    }
    rule.slack = kFilterSlack * (std::abs(s.D) + c_max);
    return rule;
}

std::vector<double> rule_drift(const MoveRule& from, const MoveRule& to) {
    // A margin is max_b (t[b] - t[a] - c[a][b] + ...) + slack: it changes by at most the largest
    // decrease of an entry of row a of c plus the change of the slack (both may be negative:
    // a module whose entries all rose holds its rows' margins down).
    const int K = to.K;
    std::vector<double> drift(K);
    for (int a = 0; a < K; ++a) {
        double c_drop = -std::numeric_limits<double>::infinity();  // K = 1: no move, no margin
        for (int b = 0; b < K; ++b) {
            const size_t i = static_cast<size_t>(a) * K + b;
            if (a != b) c_drop = std::max(c_drop, from.c[i] - to.c[i]);
        }
        drift[a] = c_drop + (to.slack - from.slack);
    }
    return drift;
}

}  // namespace ulcmod
