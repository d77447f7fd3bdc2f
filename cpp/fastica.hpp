// FastICA (Hyvarinen & Oja): PCA whitening, then the symmetric (parallel) or deflation fixed-point
// iteration with the logcosh, exp or cube contrast. Follows scikit-learn's formulation step by
// step (same whitening convention and sign fix, same updates and stopping rule), so results agree
// with sklearn.decomposition.FastICA given the same initial W. Products and eigen-decompositions
// run on OpenBLAS (scipy-openblas32); the element-wise contrast runs on OpenMP threads.
#pragma once

#include <cstdint>
#include <vector>

namespace ulcmod {

enum class Contrast { LogCosh, Exp, Cube };

struct IcaSettings {
    Contrast fun = Contrast::LogCosh;
    double alpha = 1.0;  // logcosh's a1, in [1, 2]
    bool deflation = false;
    double tol = 1e-4;
    int max_iter = 200;
};

template <class T>
struct Whitening {
    std::vector<T> mean;  // p
    std::vector<T> K;     // c x p: whitened = K (X - mean)^T * sqrt(n)
    std::vector<T> X1;    // c x n, rows of unit variance, uncorrelated
    T smallest_ratio;     // smallest kept eigenvalue / largest (rank check)
};

// Centre X (n x p, row-major) and whiten it to c dimensions by PCA: the eigenvectors of the
// p x p scatter matrix, or of the n x n Gram matrix when n < p (same result, smaller problem).
template <class T>
Whitening<T> whiten(const T* X, int64_t n, int64_t p, int64_t c);

template <class T>
struct IcaRun {
    std::vector<T> W;  // c x c unmixing of the whitened data
    int n_iter = 0;
    bool converged = false;
};

// The fixed-point iteration on whitened data X1 (c x n) from the initial W0 (c x c).
template <class T>
IcaRun<T> fastica_iterate(const T* X1, int64_t c, int64_t n, const T* W0, const IcaSettings& s);

}  // namespace ulcmod
