// Splits [0, n) into contiguous ranges run on OpenMP threads (or inline without OpenMP).
// The body must not throw: exceptions cannot cross an OpenMP region.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ulcmod {

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

template <class F>
void parallel_for(int64_t n, int64_t min_chunk, F&& body) {
    if (n <= 0) return;
    const int64_t threads = max_threads();
    const int64_t chunks = std::min<int64_t>(4 * threads, (n + min_chunk - 1) / min_chunk);
    if (threads <= 1 || chunks <= 1) {
        body(int64_t{0}, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (int64_t t = 0; t < chunks; ++t) body(n * t / chunks, n * (t + 1) / chunks);
}

}  // namespace ulcmod
