#include "fastica.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "blas.hpp"
#include "interrupt.hpp"
#include "parallel.hpp"
#include "simd_clones.hpp"

namespace ulcmod {
namespace {


// exp(x) in double, branch-free so loops vectorise: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite),
// e^r by its Taylor series to r^12 (relative error below 2e-16), 2^k assembled in the exponent
// bits. Inputs are clamped to [-708, 709], where exp is finite and normal.
inline double exp_fast(double x) {
    x = std::min(std::max(x, -708.0), 709.0);
    const double shift = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
    const double t = x * 1.4426950408889634 + shift;
    const double k = t - shift;
    const double r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t tb, sb;
    std::memcpy(&tb, &t, 8);
    std::memcpy(&sb, &shift, 8);
    const int64_t bits = (tb - sb + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, 8);
    return p * scale;
}

// tanh(x) = 1 - 2 / (exp(2|x|) + 1), with the sign of x (absolute error below 1e-15).
inline double tanh_fast(double x) {
    const double e = exp_fast(2.0 * std::min(std::fabs(x), 20.0));
    return std::copysign(1.0 - 2.0 / (e + 1.0), x);
}

// In place g(x), and the sum of g'(x), over one chunk.
template <class T>
ULCMOD_SIMD_CLONES double contrast_chunk(T* y, int64_t len, Contrast fun, double alpha) {
    double sum = 0.0;
    if (fun == Contrast::LogCosh) {
        for (int64_t i = 0; i < len; ++i) {
            const double g = tanh_fast(alpha * static_cast<double>(y[i]));
            y[i] = static_cast<T>(g);
            sum += alpha * (1.0 - g * g);
        }
    } else if (fun == Contrast::Exp) {
        for (int64_t i = 0; i < len; ++i) {
            const double x = y[i], x2 = x * x, e = exp_fast(-0.5 * x2);
            y[i] = static_cast<T>(x * e);
            sum += (1.0 - x2) * e;
        }
    } else {
        for (int64_t i = 0; i < len; ++i) {
            const double x = y[i];
            y[i] = static_cast<T>(x * x * x);
            sum += 3.0 * x * x;
        }
    }
    return sum;
}

// Y (rows x n) <- g(Y); gp_mean[r] = mean of g'(Y[r, :]). Chunks of rows run in parallel.
template <class T>
void contrast(T* Y, int64_t rows, int64_t n, const IcaSettings& s, T* gp_mean) {
    const int64_t chunk = 8192, per_row = (n + chunk - 1) / chunk;
    std::vector<double> partial(rows * per_row);
    parallel_for(rows * per_row, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t r = t / per_row, c0 = (t % per_row) * chunk;
            partial[t] = contrast_chunk(Y + r * n + c0, std::min(chunk, n - c0), s.fun, s.alpha);
        }
    });
    for (int64_t r = 0; r < rows; ++r) {
        double sum = 0.0;
        for (int64_t k = 0; k < per_row; ++k) sum += partial[r * per_row + k];
        gp_mean[r] = static_cast<T>(sum / static_cast<double>(n));
    }
}

// W <- (W W^T)^(-1/2) W.
template <class T>
void sym_decorrelation(std::vector<T>& W, int64_t c) {
    std::vector<T> E(c * c), s(c), tmp(c * c), M(c * c), out(c * c);
    blas::gram(false, c, c, W.data(), c, E.data());  // W W^T
    blas::syevd(c, E.data(), s.data());               // rows of E: eigenvectors
    for (int64_t i = 0; i < c; ++i) {
        const T inv = T(1) / std::sqrt(std::max(s[i], std::numeric_limits<T>::min()));
        for (int64_t j = 0; j < c; ++j) tmp[i * c + j] = E[i * c + j] * inv;
    }
    blas::gemm(true, false, c, c, c, T(1), E.data(), c, tmp.data(), c, T(0), M.data(), c);  // E^T D E
    blas::gemm(false, false, c, c, c, T(1), M.data(), c, W.data(), c, T(0), out.data(), c);
    W.swap(out);
}

template <class T>
T dot(const T* a, const T* b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
    return static_cast<T>(s);
}

// X1 in host memory: the products on OpenBLAS, the contrast on OpenMP threads.
template <class T>
class HostIcaData final : public IcaData<T> {
public:
    HostIcaData(const T* X1, int64_t c, int64_t n) : X1_(X1), c_(c), n_(n) {}
    void step(const T* w, int64_t r, const IcaSettings& s, T* G, T* gp) override {
        WX_.resize(r * n_);
        blas::gemm(false, false, r, n_, c_, T(1), w, c_, X1_, n_, T(0), WX_.data(), n_);
        contrast(WX_.data(), r, n_, s, gp);
        blas::gemm(false, true, r, c_, n_, T(1) / static_cast<T>(n_), WX_.data(), n_, X1_, n_, T(0), G, c_);
    }

private:
    const T* X1_;
    int64_t c_, n_;
    std::vector<T> WX_;
};

template <class T>
IcaRun<T> parallel_ica(IcaData<T>& X1, int64_t c, const T* W0, const IcaSettings& s) {
    IcaRun<T> run;
    run.W.assign(W0, W0 + c * c);
    sym_decorrelation(run.W, c);
    std::vector<T> W1(c * c), gp(c);
    for (run.n_iter = 1; run.n_iter <= s.max_iter; ++run.n_iter) {
        check_interrupt();
        X1.step(run.W.data(), c, s, W1.data(), gp.data());
        for (int64_t i = 0; i < c; ++i)
            for (int64_t j = 0; j < c; ++j) W1[i * c + j] -= gp[i] * run.W[i * c + j];
        sym_decorrelation(W1, c);
        double lim = 0.0;
        for (int64_t i = 0; i < c; ++i)
            lim = std::max(lim, std::fabs(std::fabs(static_cast<double>(dot(&W1[i * c], &run.W[i * c], c))) - 1.0));
        run.W.swap(W1);
        if (lim < s.tol) {
            run.converged = true;
            break;
        }
    }
    run.n_iter = std::min(run.n_iter, s.max_iter);
    return run;
}

template <class T>
IcaRun<T> deflation_ica(IcaData<T>& X1, int64_t c, const T* W0, const IcaSettings& s) {
    IcaRun<T> run;
    run.W.assign(c * c, T(0));
    run.converged = true;
    std::vector<T> w(c), w1(c);
    for (int64_t j = 0; j < c; ++j) {
        std::copy(W0 + j * c, W0 + (j + 1) * c, w.begin());
        const T norm0 = std::sqrt(dot(w.data(), w.data(), c));
        for (auto& v : w) v /= norm0;
        bool done = false;
        int it = 1;
        for (; it <= s.max_iter; ++it) {
            check_interrupt();
            T gp;
            X1.step(w.data(), 1, s, w1.data(), &gp);
            for (int64_t k = 0; k < c; ++k) w1[k] -= gp * w[k];
            for (int64_t k = 0; k < j; ++k) {  // Gram-Schmidt against the components found
                const T proj = dot(w1.data(), &run.W[k * c], c);
                for (int64_t m = 0; m < c; ++m) w1[m] -= proj * run.W[k * c + m];
            }
            const T norm = std::sqrt(dot(w1.data(), w1.data(), c));
            for (auto& v : w1) v /= norm;
            const double lim = std::fabs(std::fabs(static_cast<double>(dot(w1.data(), w.data(), c))) - 1.0);
            w.swap(w1);
            if (lim < s.tol) {
                done = true;
                break;
            }
        }
        run.n_iter = std::max(run.n_iter, std::min(it, s.max_iter));
        run.converged = run.converged && done;
        std::copy(w.begin(), w.end(), run.W.begin() + j * c);
    }
    return run;
}

// X in host memory: column sums from per-thread partials, the products on OpenBLAS.
template <class T>
class HostWhitenSource final : public WhitenSource<T> {
public:
    HostWhitenSource(const T* X, int64_t n, int64_t p) : X_(X), n_(n), p_(p) {}

    std::vector<double> column_sums() override {
        const int64_t threads = max_threads();
        std::vector<std::vector<double>> partial(threads, std::vector<double>(p_, 0.0));
        parallel_for(threads, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
                double* acc = partial[t].data();
                for (int64_t i = n_ * t / threads; i < n_ * (t + 1) / threads; ++i)
                    for (int64_t j = 0; j < p_; ++j) acc[j] += X_[i * p_ + j];
            }
        });
        std::vector<double> sums(p_, 0.0);
        for (int64_t j = 0; j < p_; ++j)
            for (const auto& part : partial) sums[j] += part[j];
        return sums;
    }

    void centre(const T* mean) override {
        Xc_.assign(X_, X_ + n_ * p_);
        parallel_for(n_, 256, [&](int64_t r0, int64_t r1) {
            for (int64_t i = r0; i < r1; ++i)
                for (int64_t j = 0; j < p_; ++j) Xc_[i * p_ + j] -= mean[j];
        });
    }

    void gram(bool scatter, T* E) override {
        blas::gram(scatter, scatter ? p_ : n_, scatter ? n_ : p_, Xc_.data(), p_, E);
    }

    void project(const T* K, int64_t c, T alpha) override {
        X1.assign(c * n_, T(0));
        blas::gemm(false, true, c, n_, p_, alpha, K, p_, Xc_.data(), p_, T(0), X1.data(), n_);
    }

    void combine(const T* A, int64_t c, T* K) override {
        blas::gemm(false, false, c, p_, n_, T(1), A, n_, Xc_.data(), p_, T(0), K, p_);
    }

    void set_whitened(const T* X1_in, int64_t c) override { X1.assign(X1_in, X1_in + c * n_); }

    std::vector<T> X1;

private:
    const T* X_;
    int64_t n_, p_;
    std::vector<T> Xc_;
};

}  // namespace

template <class T>
Whitening<T> whiten(WhitenSource<T>& X, int64_t n, int64_t p, int64_t c) {
    if (c < 1 || c > std::min(n, p)) throw std::invalid_argument("n_components must be in [1, min(n, p)]");
    Whitening<T> out;
    // A NaN or infinity anywhere in X shows up in its column's sum: the finiteness check.
    const std::vector<double> sums = X.column_sums();
    out.mean.resize(p);
    for (int64_t j = 0; j < p; ++j) {
        if (!std::isfinite(sums[j]))
            throw std::invalid_argument("X contains NaN or infinity (column " + std::to_string(j) +
                                        "); remove or impute those values first");
        out.mean[j] = static_cast<T>(sums[j] / static_cast<double>(n));
    }
    X.centre(out.mean.data());
    const bool scatter = p <= n;  // eigen-decompose the smaller of X^T X (p x p) and X X^T (n x n)
    const int64_t m = scatter ? p : n;
    std::vector<T> E(m * m), lam(m);
    X.gram(scatter, E.data());
    blas::syevd(m, E.data(), lam.data());
    const T floor = std::numeric_limits<T>::epsilon() * 10;  // sklearn's clamp of degenerate ones
    out.smallest_ratio = lam[m - c] / std::max(lam[m - 1], std::numeric_limits<T>::min());
    const T sqrt_n = std::sqrt(static_cast<T>(n));
    out.K.assign(c * p, T(0));
    if (scatter) {
        for (int64_t k = 0; k < c; ++k) {
            const T* u = &E[(m - 1 - k) * m];  // k-th largest
            const T d = std::sqrt(std::max(lam[m - 1 - k], floor));
            const T sign = u[0] < 0 ? T(-1) : T(1);  // sklearn: u *= sign(u[0])
            for (int64_t j = 0; j < p; ++j) out.K[k * p + j] = sign * u[j] / d;
        }
        X.project(out.K.data(), c, sqrt_n);
    } else {
        std::vector<T> A(c * n), X1(c * n);
        for (int64_t k = 0; k < c; ++k) std::copy_n(&E[(m - 1 - k) * m], n, &A[k * n]);
        X.combine(A.data(), c, out.K.data());  // A Xc
        for (int64_t k = 0; k < c; ++k) {
            const T l = std::max(lam[m - 1 - k], floor);
            const T sign = out.K[k * p] < 0 ? T(-1) : T(1);  // sign of u[0] = (Xc^T a)[0] / d
            for (int64_t j = 0; j < p; ++j) out.K[k * p + j] *= sign / l;
            for (int64_t i = 0; i < n; ++i) X1[k * n + i] = sign * sqrt_n * A[k * n + i];
        }
        X.set_whitened(X1.data(), c);
    }
    return out;
}

template <class T>
Whitening<T> whiten(const T* X, int64_t n, int64_t p, int64_t c) {
    HostWhitenSource<T> source(X, n, p);
    Whitening<T> out = whiten(static_cast<WhitenSource<T>&>(source), n, p, c);
    out.X1 = std::move(source.X1);
    return out;
}

template <class T>
IcaRun<T> fastica_iterate(IcaData<T>& X1, int64_t c, const T* W0, const IcaSettings& s) {
    return s.deflation ? deflation_ica(X1, c, W0, s) : parallel_ica(X1, c, W0, s);
}

template <class T>
IcaRun<T> fastica_iterate(const T* X1, int64_t c, int64_t n, const T* W0, const IcaSettings& s) {
    HostIcaData<T> data(X1, c, n);
    return fastica_iterate(static_cast<IcaData<T>&>(data), c, W0, s);
}

template Whitening<float> whiten(WhitenSource<float>&, int64_t, int64_t, int64_t);
template Whitening<double> whiten(WhitenSource<double>&, int64_t, int64_t, int64_t);
template Whitening<float> whiten(const float*, int64_t, int64_t, int64_t);
template Whitening<double> whiten(const double*, int64_t, int64_t, int64_t);
template IcaRun<float> fastica_iterate(IcaData<float>&, int64_t, const float*, const IcaSettings&);
template IcaRun<double> fastica_iterate(IcaData<double>&, int64_t, const double*, const IcaSettings&);
template IcaRun<float> fastica_iterate(const float*, int64_t, int64_t, const float*, const IcaSettings&);
template IcaRun<double> fastica_iterate(const double*, int64_t, int64_t, const double*, const IcaSettings&);

}  // namespace ulcmod
