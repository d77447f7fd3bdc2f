// FastICA on a GPU: the data-sized steps of cpp/fastica.hpp (column means, centring, the scatter
// or Gram matrix, the projections, and each fixed-point step's products and contrast) on cuBLAS
// and CUDA kernels, through the same WhitenSource / IcaData seams as the host version, so the
// algorithm itself (eigen-decompositions of p x p or c x c matrices, sign conventions, the
// decorrelation and the stopping rule) is the host's code, shared.
#pragma once

#include <memory>
#include <vector>

#include "common.hpp"
#include "device_array.hpp"
#include "fastica.hpp"

namespace ulcmod::cuda {

// The whitened data X1 (rows x cols = c x n) of a run, in GPU memory, float32 or float64.
struct IcaMatrix {
    int device = 0;
    int64_t rows = 0, cols = 0;
    bool f32 = false;
    DeviceBuffer<float> f;
    DeviceBuffer<double> d;
};

template <class T>
struct DeviceWhitening {
    Whitening<T> w;  // mean, K, smallest_ratio (w.X1 empty)
    std::shared_ptr<IcaMatrix> X1;
};

// Centre X (n x p, any dtype and layout on the GPU) and whiten it to c dimensions, in precision T.
template <class T>
DeviceWhitening<T> whiten_device(const DeviceArray& X, int64_t c);

// X1 = X^T in precision T (for data already white).
template <class T>
std::shared_ptr<IcaMatrix> transpose_device(const DeviceArray& X);

template <class T>
IcaRun<T> iterate_device(const IcaMatrix& X1, const T* W0, const IcaSettings& s);

}  // namespace ulcmod::cuda
