// IterD: joint partition of neurons (rows of A) and samples (columns of A) into K modules that
// maximises L = K * D / (P * H) (see DESIGN.md). Each sweep moves one side's elements; every
// candidate move is scored in O(1) from the maintained scalars D, P, H and the block-sum table
// of that side, so a sweep costs O(elements * K) plus table upkeep. Tables and row scoring are
// the backend's (backend.hpp); the sweeps and their exact acceptance test are here.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "backend.hpp"

namespace ulcmod {

// How many labels equal each of 0..K-1; std::invalid_argument naming `what` ("sample", ...),
// the label and its index when one lies outside [0, K).
std::vector<int64_t> count_labels(const std::vector<int32_t>& labels, int K, const char* what);

struct Objective {
    double L, xi, B;  // L = xi * B
    double D, P, H;   // diagonal-block sum, sum n_k m_k, sum 1 / (n_k m_k)
};

// The objective from a diagonal-block sum and the module sizes.
Objective objective_from(double D, const std::vector<int64_t>& n, const std::vector<int64_t>& m);

// Visit order within a sweep.
//  Parallel:   score every row under the current state (in parallel, on the backend), apply the
//              improving ones exactly and one at a time in index order, each re-scored against
//              the state as it is then; repeat until a round finds none.
//  Random:     Gauss-Seidel over a fresh seeded permutation (the published algorithm).
//  Sequential: Gauss-Seidel in index order.
// Every applied move is a strict improvement of L and a sweep ends only when no single move of
// its side improves L, whatever the order.
enum class SweepOrder { Parallel, Random, Sequential };

class IterDState {
public:
    // `neuron_labels` may be empty: each neuron then joins the sample module on which its mean
    // activation is highest (modules left empty take the neuron that loses least by joining).
    // Throws std::invalid_argument for labels out of range, empty modules or non-finite A.
    IterDState(std::unique_ptr<Backend> backend, std::vector<int32_t> neuron_labels,
               std::vector<int32_t> sample_labels, double tol, uint64_t seed);

    // One neuron sweep then one sample sweep; returns (neurons moved, samples moved).
    std::pair<int64_t, int64_t> iterate(SweepOrder order);
    // One sweep of one side; returns the number of its elements moved. When it returns, no
    // single move of that side's elements improves L (given the other side's labels).
    int64_t sweep(Side side, SweepOrder order);

    // Exact objective of the current labels, from up-to-date tables.
    Objective objective();

    const std::vector<int32_t>& neuron_labels() const { return u_; }
    const std::vector<int32_t>& sample_labels() const { return s_; }
    // R (N x K) and C (M x K), brought up to date first, in host memory.
    std::vector<double> neuron_table() { return table_copy(Side::Neurons); }
    std::vector<double> sample_table() { return table_copy(Side::Samples); }

    TableStats stats() const { return backend_->stats(); }
    // Scoring rounds of parallel sweeps (each a scan of the rows of one table).
    int64_t rounds() const { return rounds_; }
    const Backend& backend() const { return *backend_; }

private:
    void derive_neuron_labels();
    std::vector<double> table_copy(Side side);

    std::unique_ptr<Backend> backend_;
    int K_;
    double tol_;
    uint64_t rng_state_;
    std::vector<int32_t> u_, s_;
    std::vector<int64_t> n_, m_;
    int64_t rounds_ = 0;
};

}  // namespace ulcmod
