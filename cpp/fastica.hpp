// FastICA (Hyvarinen & Oja): PCA whitening, then the symmetric (parallel) or deflation fixed-point
// iteration with the logcosh, exp or cube contrast. Follows scikit-learn's formulation step by
// step (same whitening convention and sign fix, same updates and stopping rule), so results agree
// with sklearn.decomposition.FastICA given the same initial W. Products and eigen-decompositions
// run on OpenBLAS (scipy-openblas32); the element-wise contrast runs on OpenMP threads.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ulcmod {

enum class Contrast { LogCosh, Exp, Cube };

// The contrast named "logcosh", "exp" or "cube"; std::invalid_argument otherwise.
inline Contrast contrast_from_name(const std::string& fun) {
    if (fun == "logcosh") return Contrast::LogCosh;
    if (fun == "exp") return Contrast::Exp;
    if (fun == "cube") return Contrast::Cube;
    throw std::invalid_argument("fun must be 'logcosh', 'exp' or 'cube', got '" + fun + "'");
}

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

// The data-sized steps of the whitening, wherever X (n x p) lives: in host memory here, on a GPU
// in cuda/ica.cu. The eigen-decomposition and everything of size p or c stay on the host.
template <class T>
class WhitenSource {
public:
    virtual ~WhitenSource() = default;
    // Column sums of X in float64 (a NaN or infinity shows up in its column's sum).
    virtual std::vector<double> column_sums() = 0;
    // X <- X - mean (row by row): the centred data Xc from now on.
    virtual void centre(const T* mean) = 0;
    // E (m x m, row-major, both triangles) = Xc^T Xc (scatter, m = p) or Xc Xc^T (m = n).
    virtual void gram(bool scatter, T* E) = 0;
    // The whitened data X1 = alpha K Xc^T (c x n) for K (c x p), kept by the source.
    virtual void project(const T* K, int64_t c, T alpha) = 0;
    // K (c x p) = A Xc for A (c x n).
    virtual void combine(const T* A, int64_t c, T* K) = 0;
    // The whitened data X1 (c x n) given directly, kept by the source.
    virtual void set_whitened(const T* X1, int64_t c) = 0;
};

// Centre X (n x p) and whiten it to c dimensions by PCA: the eigenvectors of the p x p scatter
// matrix, or of the n x n Gram matrix when n < p (same result, smaller problem). The result's X1
// is left empty: the source keeps it.
template <class T>
Whitening<T> whiten(WhitenSource<T>& X, int64_t n, int64_t p, int64_t c);

// The same for X in host memory (row-major); the result holds X1.
template <class T>
Whitening<T> whiten(const T* X, int64_t n, int64_t p, int64_t c);

template <class T>
struct IcaRun {
    std::vector<T> W;  // c x c unmixing of the whitened data
    int n_iter = 0;
    bool converged = false;
};

// The data-sized step of the fixed point, wherever the whitened data X1 (c x n) lives.
template <class T>
class IcaData {
public:
    virtual ~IcaData() = default;
    // For the r rows of w (r x c): G (r x c) = g(w X1) X1^T / n, and gp[i] = the mean of
    // g'(w_i X1) over the n samples.
    virtual void step(const T* w, int64_t r, const IcaSettings& s, T* G, T* gp) = 0;
};

// The fixed-point iteration on whitened data (c components) from the initial W0 (c x c).
template <class T>
IcaRun<T> fastica_iterate(IcaData<T>& X1, int64_t c, const T* W0, const IcaSettings& s);

// The same for X1 (c x n) in host memory.
template <class T>
IcaRun<T> fastica_iterate(const T* X1, int64_t c, int64_t n, const T* W0, const IcaSettings& s);

}  // namespace ulcmod
