// IterD: joint partition of neurons (rows of A) and samples (columns of A) into K modules that
// maximises L = K * D / (P * H) (see DESIGN.md). Each sweep moves one side's elements one at a
// time (Gauss-Seidel); every candidate move is scored in O(1) from maintained scalars D, P, H and
// the block-sum table of that side, so a sweep costs O(elements * K) plus table upkeep.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "matrix.hpp"
#include "tables.hpp"

namespace ulcmod {

struct Objective {
    double L, xi, B;  // L = xi * B
    double D, P, H;   // diagonal-block sum, sum n_k m_k, sum 1 / (n_k m_k)
};

// The objective from a diagonal-block sum and the module sizes.
Objective objective_from(double D, const std::vector<int64_t>& n, const std::vector<int64_t>& m);

enum class TablePolicy { Auto, Rebuild, Update };

class IterDState {
public:
    // `neuron_labels` may be empty: each neuron then joins the sample module on which its mean
    // activation is highest (modules left empty take the neuron that loses least by joining).
    // Throws std::invalid_argument for labels out of range, empty modules or non-finite A.
    IterDState(const Matrix& A, int K, std::vector<int32_t> neuron_labels,
               std::vector<int32_t> sample_labels, double tol, uint64_t seed,
               TablePolicy policy = TablePolicy::Auto);

    // One neuron sweep then one sample sweep; returns (neurons moved, samples moved).
    std::pair<int64_t, int64_t> iterate(bool shuffle);

    // Exact objective of the current labels, from up-to-date tables.
    Objective objective();

    const std::vector<int32_t>& neuron_labels() const { return u_; }
    const std::vector<int32_t>& sample_labels() const { return s_; }
    // R (N x K) and C (M x K), brought up to date first.
    const std::vector<double>& neuron_table();
    const std::vector<double>& sample_table();

    // Work done on tables: full builds (one pass over A each) and elements read by updates.
    int64_t table_builds() const { return builds_; }
    int64_t update_reads() const { return update_reads_; }

private:
    void refresh(bool neuron_side);
    void derive_neuron_labels();

    Matrix A_, At_;
    int K_;
    double tol_;
    uint64_t rng_state_;
    TablePolicy policy_;
    std::vector<int32_t> u_, s_;
    std::vector<int64_t> n_, m_;
    std::vector<double> R_, C_;  // R: table(A, s), C: table(A^T, u)
    bool R_built_ = false, C_built_ = false;
    std::vector<Move> R_pending_, C_pending_;  // moved samples not yet in R, moved neurons not in C
    int64_t builds_ = 0, update_reads_ = 0;
};

}  // namespace ulcmod
