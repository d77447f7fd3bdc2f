// One pass of the randomized PCA of the samples (python/ulcmod/_pca.py) over rows of an activation
// matrix in GPU memory: the same arithmetic as the host pass (float32 products of A's rows with
// the float32 basis, centring and Gram matrix in float64), on cuBLAS.
#pragma once

#include <cstdint>
#include <vector>

#include "device_array.hpp"

namespace ulcmod::cuda {

struct PcaPass {
    std::vector<double> gram;    // w x w: Z^T Z of the centred scores Z = X Y
    std::vector<double> y_next;  // M x w: X^T Z (centred), empty on the last pass
    int64_t bad = -1;            // first row (position in `rows`) whose mean is not finite, or -1
};

// X = the rows `rows` of A (all rows when `rows` is null), centred per row; Y is M x w, row-major.
PcaPass pca_pass(const DeviceArray& A, const double* Y, int64_t w, bool last, const int64_t* rows, int64_t n_rows);

}  // namespace ulcmod::cuda
