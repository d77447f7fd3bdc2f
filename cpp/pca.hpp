// One pass of the randomized PCA of the samples (columns) of A, over selected rows (neurons):
// the core of python/ulcmod/_pca.py, which owns the rest (QR, eigen-decomposition, scores).
#pragma once

#include <cstdint>
#include <vector>

#include "matrix.hpp"

namespace ulcmod {

struct PcaPass {
    std::vector<double> gram;    // width x width: sum over rows of Z^T Z
    std::vector<double> y_next;  // M x width: sum of X^T Z (empty when `last`)
    std::vector<double> mu_z;    // width: sum of mu_i Z[i, :] (empty when `last`)
    int64_t first_nonfinite = -1;  // position in the row list of the first row with NaN/inf, or -1
};

// For the rows A[rows[i]] (all rows when `rows` is null), i < n_rows, with M = A.cols and Y
// (M x width, float64, row-major): X = those rows widened to float32 (float64 for float64 A),
// mu_i = mean of row i (float64), Z = X Yw - mu y_sum^T (X Yw in X's precision with Yw = Y in it,
// the rest in float64, y_sum = Y's column sums), and the sums above, with X^T Z in X's
// precision (Z rounded to it) per block of rows. Any dtype and strides. Parallel over blocks of
// rows with OpenMP, each thread's GEMMs on single-threaded OpenBLAS; the per-thread partial
// sums are added in thread order, so results do not depend on timing.
PcaPass pca_pass(const Matrix& A, const int64_t* rows, int64_t n_rows, const double* Y, int64_t width, bool last);

}  // namespace ulcmod
