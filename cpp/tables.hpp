// Block-sum tables: T[r, k] = sum over columns c with label k of A(r, c), in float64.
// IterD keeps R = table(A, sample labels) for the neuron sweep and C = table(A^T, neuron labels)
// for the sample sweep; both are the same kernel on a transposed view.
#pragma once

#include <cstdint>
#include <vector>

#include "matrix.hpp"

namespace ulcmod {

// A column of A that changed module: its contribution moves from column `from` to `to`.
struct Move {
    int64_t index;
    int32_t from, to;
};

// out (A.rows x K, row-major) = block sums of A's rows over the columns' labels. One streaming,
// multi-threaded pass over A.
void build_table(const Matrix& A, const int32_t* col_labels, int K, double* out);

// Apply column moves to a table built by build_table: out[r, from] -= A(r, c), out[r, to] += A(r, c).
// `moves` is sorted by column index in place.
void update_table(const Matrix& A, std::vector<Move>& moves, int K, double* out);

// Whether applying `n_moves` column moves is faster than rebuilding the table.
bool update_is_cheaper(const Matrix& A, int64_t n_moves);

// Index of the first row holding a non-finite value, or -1. A non-finite entry of A always
// shows up in the float64 row sums of its table, so the check costs no extra pass.
int64_t first_nonfinite_row(const double* table, int64_t rows, int K);

}  // namespace ulcmod
