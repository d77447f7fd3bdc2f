#include "iterd.hpp"

#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "random.hpp"

namespace ulcmod {
namespace {

std::vector<int64_t> count_labels(const std::vector<int32_t>& labels, int K, const char* what) {
    std::vector<int64_t> counts(K, 0);
    for (size_t i = 0; i < labels.size(); ++i) {
        const int32_t k = labels[i];
        if (k < 0 || k >= K)
            throw std::invalid_argument(std::string(what) + " label " + std::to_string(k) +
                                        " at index " + std::to_string(i) + " is outside [0, " +
                                        std::to_string(K) + ")");
        ++counts[k];
    }
    return counts;
}

void require_nonempty(const std::vector<int64_t>& counts, const char* what) {
    for (size_t k = 0; k < counts.size(); ++k)
        if (counts[k] == 0)
            throw std::invalid_argument(std::string(what) + " module " + std::to_string(k) +
                                        " is empty; every module needs at least one " + what);
}

// One Gauss-Seidel sweep over the elements of one side (rows of `table`). `cnt` are this side's
// module sizes (updated as elements move), `other` the fixed sizes of the other side. Moves are
// appended to `moves` (index, from, to).
int64_t sweep(const std::vector<double>& table, int K, std::vector<int32_t>& labels,
              std::vector<int64_t>& cnt, const std::vector<int64_t>& other, double tol,
              const std::vector<int64_t>* order, std::vector<Move>& moves) {
    const int64_t rows = static_cast<int64_t>(labels.size());
    // D from the table, P and H from the counts: no drift carried between sweeps.
    double D = 0.0;
    for (int64_t r = 0; r < rows; ++r) D += table[r * K + labels[r]];
    double P = 0.0, H = 0.0;
    std::vector<double> inv(K), inv_minus(K), dH_plus(K), oth(K);
    auto refresh_module = [&](int k) {
        const double nk = static_cast<double>(cnt[k]), mk = static_cast<double>(other[k]);
        inv[k] = 1.0 / (nk * mk);
        inv_minus[k] = cnt[k] > 1 ? 1.0 / ((nk - 1.0) * mk) : 0.0;
        dH_plus[k] = 1.0 / ((nk + 1.0) * mk) - inv[k];
    };
    for (int k = 0; k < K; ++k) {
        refresh_module(k);
        oth[k] = static_cast<double>(other[k]);
        P += static_cast<double>(cnt[k]) * oth[k];
        H += inv[k];
    }
    const double Kd = K;
    int64_t moved = 0;
    std::vector<double> score(K);
    for (int64_t step = 0; step < rows; ++step) {
        const int64_t r = order ? (*order)[step] : step;
        const int a = labels[r];
        if (cnt[a] == 1) continue;  // leaving would empty module a
        const double* t = table.data() + r * K;
        const double L = Kd * D / (P * H);
        const double Da = D - t[a], Pa = P - oth[a], Ha = H - inv[a] + inv_minus[a];
        for (int b = 0; b < K; ++b) score[b] = Kd * (Da + t[b]) / ((Pa + oth[b]) * (Ha + dH_plus[b]));
        int best = -1;
        double best_L = L + tol * std::abs(L);
        for (int b = 0; b < K; ++b) {
            if (b != a && score[b] > best_L) {
                best_L = score[b];
                best = b;
            }
        }
        if (best < 0) continue;
        D = Da + t[best];
        P = Pa + oth[best];
        H = Ha + dH_plus[best];
        --cnt[a];
        ++cnt[best];
        refresh_module(a);
        refresh_module(best);
        labels[r] = best;
        moves.push_back({r, static_cast<int32_t>(a), static_cast<int32_t>(best)});
        ++moved;
    }
    return moved;
}

}  // namespace

Objective objective_from(double D, const std::vector<int64_t>& n, const std::vector<int64_t>& m) {
    double P = 0.0, H = 0.0;
    for (size_t k = 0; k < n.size(); ++k) {
        const double nm = static_cast<double>(n[k]) * static_cast<double>(m[k]);
        P += nm;
        H += 1.0 / nm;
    }
    const double K = static_cast<double>(n.size());
    const double xi = D / P, B = K / H;
    return {xi * B, xi, B, D, P, H};
}

IterDState::IterDState(const Matrix& A, int K, std::vector<int32_t> neuron_labels,
                       std::vector<int32_t> sample_labels, double tol, uint64_t seed,
                       TablePolicy policy)
    : A_(A), At_(A.transposed()), K_(K), tol_(tol), rng_state_(seed), policy_(policy),
      u_(std::move(neuron_labels)), s_(std::move(sample_labels)) {
    if (K < 1) throw std::invalid_argument("K must be at least 1");
    if (static_cast<int64_t>(s_.size()) != A.cols)
        throw std::invalid_argument("sample labels: expected " + std::to_string(A.cols) + ", got " +
                                    std::to_string(s_.size()));
    if (!u_.empty() && static_cast<int64_t>(u_.size()) != A.rows)
        throw std::invalid_argument("neuron labels: expected " + std::to_string(A.rows) + ", got " +
                                    std::to_string(u_.size()));
    if (K > A.rows || K > A.cols)
        throw std::invalid_argument("K exceeds the number of neurons or samples");
    m_ = count_labels(s_, K, "sample");
    require_nonempty(m_, "sample");
    if (!u_.empty()) {
        n_ = count_labels(u_, K, "neuron");
        require_nonempty(n_, "neuron");
    }
    R_.assign(static_cast<size_t>(A.rows) * K, 0.0);
    C_.assign(static_cast<size_t>(A.cols) * K, 0.0);
    refresh(true);
    const int64_t bad = first_nonfinite_row(R_.data(), A.rows, K);
    if (bad >= 0)
        throw std::invalid_argument("A contains NaN or infinity (first in row " + std::to_string(bad) +
                                    "); replace or drop non-finite activations before clustering");
    if (u_.empty()) derive_neuron_labels();
}

void IterDState::derive_neuron_labels() {
    const int64_t N = A_.rows;
    u_.assign(N, 0);
    n_.assign(K_, 0);
    std::vector<double> inv_m(K_);
    for (int k = 0; k < K_; ++k) inv_m[k] = 1.0 / static_cast<double>(m_[k]);
    for (int64_t i = 0; i < N; ++i) {
        const double* t = R_.data() + i * K_;
        int best = 0;
        for (int k = 1; k < K_; ++k)
            if (t[k] * inv_m[k] > t[best] * inv_m[best]) best = k;
        u_[i] = best;
        ++n_[best];
    }
    for (int k = 0; k < K_; ++k) {
        if (n_[k] > 0) continue;
        int64_t pick = -1;
        double pick_loss = std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < N; ++i) {
            const int a = u_[i];
            if (n_[a] < 2) continue;
            const double loss = R_[i * K_ + a] * inv_m[a] - R_[i * K_ + k] * inv_m[k];
            if (loss < pick_loss) {
                pick_loss = loss;
                pick = i;
            }
        }
        --n_[u_[pick]];  // K <= N guarantees a module with two or more neurons exists
        u_[pick] = k;
        ++n_[k];
    }
}

void IterDState::refresh(bool neuron_side) {
    const Matrix& view = neuron_side ? A_ : At_;
    std::vector<double>& table = neuron_side ? R_ : C_;
    std::vector<Move>& pending = neuron_side ? R_pending_ : C_pending_;
    bool& built = neuron_side ? R_built_ : C_built_;
    const std::vector<int32_t>& col_labels = neuron_side ? s_ : u_;
    if (built && pending.empty()) return;
    const bool update = built && (policy_ == TablePolicy::Update ||
                                  (policy_ == TablePolicy::Auto &&
                                   update_is_cheaper(view, static_cast<int64_t>(pending.size()))));
    if (update) {
        update_table(view, pending, K_, table.data());
        update_reads_ += static_cast<int64_t>(pending.size()) * view.rows;
    } else {
        build_table(view, col_labels.data(), K_, table.data());
        ++builds_;
        built = true;
    }
    pending.clear();
}

std::pair<int64_t, int64_t> IterDState::iterate(bool shuffle) {
    std::vector<int64_t> order;
    auto make_order = [&](int64_t n) -> const std::vector<int64_t>* {
        if (!shuffle) return nullptr;
        order.resize(n);
        std::iota(order.begin(), order.end(), int64_t{0});
        shuffle_in_place(order, rng_state_);
        return &order;
    };
    refresh(true);
    const int64_t moved_neurons =
        sweep(R_, K_, u_, n_, m_, tol_, make_order(A_.rows), C_pending_);
    refresh(false);
    const int64_t moved_samples =
        sweep(C_, K_, s_, m_, n_, tol_, make_order(A_.cols), R_pending_);
    return {moved_neurons, moved_samples};
}

Objective IterDState::objective() {
    // C depends on neuron labels only, so it is exact whenever no neuron moved since it was built.
    refresh(false);
    double D = 0.0;
    for (int64_t j = 0; j < A_.cols; ++j) D += C_[j * K_ + s_[j]];
    return objective_from(D, n_, m_);
}

const std::vector<double>& IterDState::neuron_table() {
    refresh(true);
    return R_;
}

const std::vector<double>& IterDState::sample_table() {
    refresh(false);
    return C_;
}

}  // namespace ulcmod
