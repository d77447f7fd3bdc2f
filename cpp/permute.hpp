// Independent seeded permutations of the rows of a matrix: the null model of the significance
// tests, in which every neuron keeps its own values but their order across samples is random.
#pragma once

#include <cstdint>

#include "matrix.hpp"

namespace ulcmod {

// Writes every row of A, in a uniformly random order of its own, into `out` (A's shape, C order,
// elements of A's size). Values are moved bit for bit, so each row of `out` holds exactly the
// multiset of its row of A. Row r's order depends on (seed, r) alone: the result is the same for
// any number of threads. Rows are shared out over the OpenMP threads. Throws Interrupted on
// Ctrl-C (inside an InterruptScope), leaving `out` partly written.
void permute_rows(const Matrix& A, void* out, uint64_t seed);

}  // namespace ulcmod
