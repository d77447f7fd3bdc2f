#include "iterd.hpp"

#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "interrupt.hpp"
#include "parallel.hpp"
#include "random.hpp"

namespace ulcmod {
namespace {

// Candidates a parallel round fetches ahead of the one it scores (see IterDState::sweep).
constexpr size_t kApplyAhead = 8;


void require_nonempty(const std::vector<int64_t>& counts, const char* what) {
    for (size_t k = 0; k < counts.size(); ++k)
        if (counts[k] == 0)
            throw std::invalid_argument(std::string(what) + " module " + std::to_string(k) +
                                        " is empty; every module needs at least one " + what);
}

// The exact state of one side's sweep: D, P, H and the per-module terms of H, kept up to date
// move by move. `cnt` are this side's module sizes (changed by apply), `other` the fixed sizes
// of the other side. Every acceptance decision of every order is made here, in one formula.
class Scorer {
public:
    Scorer(double D, std::vector<int64_t>& cnt, const std::vector<int64_t>& other, double tol)
        : K_(static_cast<int>(cnt.size())), D_(D), tol_(tol), cnt_(cnt), other_(other), inv_(K_),
          inv_minus_(K_), dH_plus_(K_), oth_(K_), score_(K_) {
        for (int k = 0; k < K_; ++k) {
            refresh_module(k);
            oth_[k] = static_cast<double>(other[k]);
            P_ += static_cast<double>(cnt[k]) * oth_[k];
            H_ += inv_[k];
        }
    }

    // The module a row with table entries t should move to from module a: the one raising L
    // most, if that is by more than tol |L|; -1 for none (or when leaving would empty a).
    int best_move(const double* t, int a) {
        if (cnt_[a] == 1) return -1;
        const double Kd = K_;
        const double L = Kd * D_ / (P_ * H_);
        const double Da = D_ - t[a], Pa = P_ - oth_[a], Ha = H_ - inv_[a] + inv_minus_[a];
        for (int b = 0; b < K_; ++b) score_[b] = Kd * (Da + t[b]) / ((Pa + oth_[b]) * (Ha + dH_plus_[b]));
        int best = -1;
        double best_L = L + tol_ * std::abs(L);
        for (int b = 0; b < K_; ++b) {
            if (b != a && score_[b] > best_L) {
                best_L = score_[b];
                best = b;
            }
        }
        return best;
    }

    void apply(const double* t, int a, int b) {
        D_ += t[b] - t[a];
        P_ += oth_[b] - oth_[a];
        H_ += inv_minus_[a] - inv_[a] + dH_plus_[b];
        --cnt_[a];
        ++cnt_[b];
        refresh_module(a);
        refresh_module(b);
    }

    SweepScalars scalars() const { return {K_, D_, P_, H_, tol_, cnt_.data(), other_.data()}; }

private:
    void refresh_module(int k) {
        const double nk = static_cast<double>(cnt_[k]), mk = static_cast<double>(other_[k]);
        inv_[k] = 1.0 / (nk * mk);
        inv_minus_[k] = cnt_[k] > 1 ? 1.0 / ((nk - 1.0) * mk) : 0.0;
        dH_plus_[k] = 1.0 / ((nk + 1.0) * mk) - inv_[k];
    }

    int K_;
    double D_, P_ = 0.0, H_ = 0.0, tol_;
    std::vector<int64_t>& cnt_;
    const std::vector<int64_t>& other_;
    std::vector<double> inv_, inv_minus_, dH_plus_, oth_, score_;
};

}  // namespace

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

IterDState::IterDState(std::unique_ptr<Backend> backend, std::vector<int32_t> neuron_labels,
                       std::vector<int32_t> sample_labels, double tol, uint64_t seed)
    : backend_(std::move(backend)), K_(backend_->K()), tol_(tol), rng_state_(seed),
      u_(std::move(neuron_labels)), s_(std::move(sample_labels)) {
    const int64_t N = backend_->rows(Side::Neurons), M = backend_->rows(Side::Samples);
    if (K_ < 1) throw std::invalid_argument("K must be at least 1");
    if (static_cast<int64_t>(s_.size()) != M)
        throw std::invalid_argument("sample labels: expected " + std::to_string(M) + ", got " +
                                    std::to_string(s_.size()));
    if (!u_.empty() && static_cast<int64_t>(u_.size()) != N)
        throw std::invalid_argument("neuron labels: expected " + std::to_string(N) + ", got " +
                                    std::to_string(u_.size()));
    if (K_ > N || K_ > M) throw std::invalid_argument("K exceeds the number of neurons or samples");
    m_ = count_labels(s_, K_, "sample");
    require_nonempty(m_, "sample");
    if (!u_.empty()) {
        n_ = count_labels(u_, K_, "neuron");
        require_nonempty(n_, "neuron");
    }
    backend_->set_labels(Side::Samples, s_.data());
    backend_->refresh(Side::Neurons);
    const int64_t bad = first_nonfinite_row(backend_->host_table(Side::Neurons), N, K_);
    if (bad >= 0)
        throw std::invalid_argument("A contains NaN or infinity (first in row " + std::to_string(bad) +
                                    "); replace or drop non-finite activations before clustering");
    if (u_.empty()) derive_neuron_labels();
    backend_->set_labels(Side::Neurons, u_.data());
}

void IterDState::derive_neuron_labels() {
    const int64_t N = backend_->rows(Side::Neurons);
    const double* R = backend_->host_table(Side::Neurons);
    u_.assign(N, 0);
    n_.assign(K_, 0);
    std::vector<double> inv_m(K_);
    for (int k = 0; k < K_; ++k) inv_m[k] = 1.0 / static_cast<double>(m_[k]);
    parallel_for(N, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            const double* t = R + i * K_;
            int best = 0;
            double best_mean = t[0] * inv_m[0];
            for (int k = 1; k < K_; ++k) {
                const double mean = t[k] * inv_m[k];
                if (mean > best_mean) best = k, best_mean = mean;
            }
            u_[i] = best;
        }
    });
    for (int32_t k : u_) ++n_[k];
    for (int k = 0; k < K_; ++k) {
        if (n_[k] > 0) continue;
        int64_t pick = -1;
        double pick_loss = std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < N; ++i) {
            const int a = u_[i];
            if (n_[a] < 2) continue;
            const double loss = R[i * K_ + a] * inv_m[a] - R[i * K_ + k] * inv_m[k];
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

int64_t IterDState::sweep(Side side, SweepOrder order) {
    const bool neurons = side == Side::Neurons;
    std::vector<int32_t>& labels = neurons ? u_ : s_;
    std::vector<int64_t>& cnt = neurons ? n_ : m_;
    const std::vector<int64_t>& other = neurons ? m_ : n_;
    backend_->refresh(side);
    // D from the table, P and H from the counts: no drift carried between sweeps.
    Scorer scorer(backend_->diagonal(side), cnt, other, tol_);
    std::vector<Move> moves;
    auto try_move = [&](int64_t r, const double* t) {
        const int a = labels[r];
        const int b = scorer.best_move(t, a);
        if (b < 0) return;
        scorer.apply(t, a, b);
        labels[r] = b;
        moves.push_back({r, static_cast<int32_t>(a), static_cast<int32_t>(b)});
    };
    if (order != SweepOrder::Parallel) {
        const int64_t rows = static_cast<int64_t>(labels.size());
        std::vector<int64_t> perm;
        if (order == SweepOrder::Random) {
            perm.resize(rows);
            std::iota(perm.begin(), perm.end(), int64_t{0});
            shuffle_in_place(perm, rng_state_);
        }
        const double* T = backend_->host_table(side);
        for (int64_t step = 0; step < rows; ++step) {
            if (step % 65536 == 0) check_interrupt();
            const int64_t r = perm.empty() ? step : perm[step];
            try_move(r, T + r * K_);
        }
        backend_->move(side, moves);
        return static_cast<int64_t>(moves.size());
    }
    int64_t moved = 0;
    Candidates cand;
    for (bool full = true;; full = false) {
        check_interrupt();
        backend_->candidates(side, make_rule(scorer.scalars()), full, cand);
        ++rounds_;
        moves.clear();
        for (size_t c = 0; c < cand.rows.size(); ++c) {
            if (c + kApplyAhead < cand.rows.size()) prefetch_row(cand.row(c + kApplyAhead, K_), K_);
            try_move(cand.rows[c], cand.row(c, K_));
        }
        if (moves.empty()) break;  // only rows the padded filter over-reported: none improves
        backend_->move(side, moves);
        moved += static_cast<int64_t>(moves.size());
    }
    return moved;
}

std::pair<int64_t, int64_t> IterDState::iterate(SweepOrder order) {
    const int64_t moved_neurons = sweep(Side::Neurons, order);
    const int64_t moved_samples = sweep(Side::Samples, order);
    return {moved_neurons, moved_samples};
}

Objective IterDState::objective() {
    // C depends on neuron labels only, so it is exact whenever no neuron moved since it was built.
    backend_->refresh(Side::Samples);
    return objective_from(backend_->diagonal(Side::Samples), n_, m_);
}

std::vector<double> IterDState::table_copy(Side side) {
    backend_->refresh(side);
    const double* T = backend_->host_table(side);
    return std::vector<double>(T, T + backend_->rows(side) * K_);
}

}  // namespace ulcmod
