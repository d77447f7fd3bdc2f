// Per-neuron z-scoring of an activation matrix in GPU memory (python/ulcmod/zscore.py): the
// statistics in float64 in one pass, and A' = (A - mean) / std written into another device array.
#pragma once

#include <vector>

#include "device_array.hpp"

namespace ulcmod::cuda {

struct RowStats {
    std::vector<double> mean, var;  // per row (neuron), population variance
};

// Mean and variance of every row, from float64 sums of (x - x0) and (x - x0)^2 with x0 the row's
// first element (a shift that keeps the one-pass formula accurate).
RowStats row_stats(const DeviceArray& A);

// out[r, c] = (A[r, c] - mean[r]) / std[r], computed in float64 and rounded to out's dtype.
// out must have A's shape and live on A's device; any strides.
void zscore_apply(const DeviceArray& A, const double* mean, const double* std, const DeviceArray& out);

}  // namespace ulcmod::cuda
