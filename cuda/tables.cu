#include "tables.cuh"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "elements.cuh"

namespace ulcmod::cuda {
namespace {

// Rowwise kernel variants (measured by benchmarks/bench_gpu.py): 0 = 4 vectors per lane per
// step, 1 = 2 vectors with the next step's prefetched, 2 = 4 vectors prefetched, 3 = 2 vectors,
// 4 = 1 vector. Fewer registers mean more warps in flight: 3 measured fastest on an H100.
constexpr int kDefaultRowwiseVariant = 3;
// Labels one Rowwise pass handles: each warp keeps kRowwiseLabels x 32 float64 accumulators in
// shared memory (8 KiB), so more labels take more passes over A.
constexpr int kRowwiseLabels = 32;
// Threads of a Colwise block; each owns elements_per_vector() consecutive table rows.
constexpr int kColwiseThreads = 128;
// Colwise chunking aims at this many blocks (enough to fill an H100's 132 SMs several times)...
constexpr int64_t kColwiseBlocks = 4096;
// ...with at least this many columns per chunk (fewer would make the partial sums dominate)...
constexpr int64_t kMinChunk = 64;
// ...and at most this many bytes of partial sums.
constexpr int64_t kMaxPartialBytes = int64_t{512} << 20;
// Cost model of an update against a rebuild, in bytes read from memory. A Rowwise update gathers
// one element per table row and moved column, which costs a whole 32-byte sector, and the
// gathers run at about half the streaming bandwidth: a factor of 2 on its sectors. A Colwise update
// streams each moved line once, like a build, plus the per-(from, to) folding: a factor of 1.25.
constexpr double kSectorBytes = 32.0;
constexpr double kRowwiseGatherPenalty = 2.0;
constexpr double kColwiseUpdatePenalty = 1.25;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---------------------------------------------------------------------------------------------
// Rowwise build

template <int V>
__device__ __forceinline__ void load_labels(const int32_t* __restrict__ p, int (&l)[V]) {
    if constexpr (V % 4 == 0) {
#pragma unroll
        for (int q = 0; q < V / 4; ++q) {
            const int4 v = __ldg(reinterpret_cast<const int4*>(p) + q);
            l[4 * q] = v.x;
            l[4 * q + 1] = v.y;
            l[4 * q + 2] = v.z;
            l[4 * q + 3] = v.w;
        }
    } else {
        const int2 v = __ldg(reinterpret_cast<const int2*>(p));
        l[0] = v.x;
        l[1] = v.y;
    }
}

// A lane's batch of U vectors of one row and their labels.
template <class T, int U>
struct Batch {
    static constexpr int V = Vec<T>::n;
    T x[U][V];
    int l[U][V];

    __device__ __forceinline__ void load(const T* row, const int32_t* __restrict__ lab, int64_t v0, int64_t nvec) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t v = v0 + 32 * u;
            if (v < nvec) {
                load_vector(row + v * V, x[u]);
                load_labels<V>(lab + v * V, l[u]);
            }
        }
    }

    __device__ __forceinline__ void add(double* acc, int lane, int k0, unsigned kc, int64_t v0, int64_t nvec) const {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (v0 + 32 * u < nvec) {
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    const unsigned k = static_cast<unsigned>(l[u][e] - k0);
                    if (k < kc) acc[k * 32 + lane] += to_double(x[u][e]);
                }
            }
        }
    }
};

// One warp per row (grid-stride). acc[k * 32 + lane] is lane `lane`'s sum of label k0 + k: a
// 64-bit access per lane at a stride of 8 bytes across the warp, conflict-free for every k.
// Each lane reads U 16-byte vectors per step; with PREFETCH it loads the next step's vectors
// before adding up the current ones, so loads stay in flight while the shared-memory sums run.
template <class T, bool VEC, int U, bool PREFETCH>
__global__ void __launch_bounds__(256) build_rowwise_kernel(const T* __restrict__ A, int64_t rows, int64_t cols,
                                                            int64_t rs, const int32_t* __restrict__ lab, int k0,
                                                            int kc, int K, double* __restrict__ out) {
    extern __shared__ double smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    double* acc = smem + static_cast<size_t>(warp) * kc * 32;
    for (int k = 0; k < kc; ++k) acc[k * 32 + lane] = 0.0;
    __syncwarp();
    const unsigned kcu = static_cast<unsigned>(kc);
    const int64_t step = static_cast<int64_t>(gridDim.x) * wpb;
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * wpb + warp; r < rows; r += step) {
        const T* row = A + r * rs;
        int64_t done = 0;
        if constexpr (VEC) {
            constexpr int V = Vec<T>::n;
            const int64_t nvec = cols / V;
            if constexpr (PREFETCH) {
                Batch<T, U> cur;
                cur.load(row, lab, lane, nvec);
                for (int64_t v0 = lane; v0 < nvec; v0 += 32 * U) {
                    Batch<T, U> next;
                    if (v0 + 32 * U < nvec) next.load(row, lab, v0 + 32 * U, nvec);
                    cur.add(acc, lane, k0, kcu, v0, nvec);
                    cur = next;
                }
            } else {
                for (int64_t v0 = lane; v0 < nvec; v0 += 32 * U) {
                    Batch<T, U> b;
                    b.load(row, lab, v0, nvec);
                    b.add(acc, lane, k0, kcu, v0, nvec);
                }
            }
            done = nvec * V;
        }
        for (int64_t c = done + lane; c < cols; c += 32) {
            const unsigned k = static_cast<unsigned>(__ldg(lab + c) - k0);
            if (k < kcu) acc[k * 32 + lane] += to_double(row[c]);
        }
        __syncwarp();
        // Lane k adds up label k's 32 partial sums, starting at a different lane each (no conflicts).
        for (int k = lane; k < kc; k += 32) {
            double s = 0.0;
#pragma unroll 8
            for (int j = 0; j < 32; ++j) s += acc[k * 32 + ((lane + j) & 31)];
            out[r * K + k0 + k] = s;
        }
        __syncwarp();
        for (int k = 0; k < kc; ++k) acc[k * 32 + lane] = 0.0;
        __syncwarp();
    }
}

int g_rowwise_variant = kDefaultRowwiseVariant;

template <class T>
void launch_build_rowwise(const TypedView<T>& V, const int32_t* d_lab, int K, double* d_out, cudaStream_t stream) {
    const bool vec = aligned16(V.data) && (V.rs * static_cast<int64_t>(sizeof(T))) % 16 == 0;
    for (int k0 = 0; k0 < K; k0 += kRowwiseLabels) {
        const int kc = std::min(kRowwiseLabels, K - k0);
        const int wpb = kc <= 16 ? 8 : 4;
        const int threads = 32 * wpb;
        const size_t smem = static_cast<size_t>(wpb) * kc * 32 * sizeof(double);
        auto kernel = !vec                      ? build_rowwise_kernel<T, false, 1, false>
                      : g_rowwise_variant == 0 ? build_rowwise_kernel<T, true, 4, false>
                      : g_rowwise_variant == 1 ? build_rowwise_kernel<T, true, 2, true>
                      : g_rowwise_variant == 2 ? build_rowwise_kernel<T, true, 4, true>
                      : g_rowwise_variant == 3 ? build_rowwise_kernel<T, true, 2, false>
                                               : build_rowwise_kernel<T, true, 1, false>;
        int per_sm = 0;
        ULCMOD_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
        const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(ceil_div(V.rows, wpb),
                                                                    int64_t{std::max(per_sm, 1)} * sm_count()));
        kernel<<<static_cast<unsigned>(grid), threads, smem, stream>>>(V.data, V.rows, V.cols, V.rs, d_lab, k0, kc,
                                                                        K, d_out);
        ULCMOD_CUDA_LAUNCHED();
    }
}

// ---------------------------------------------------------------------------------------------
// Colwise build and update: chunks of label-sorted columns, then a fixed-order fold.

// partial[chunk, r] = sum over the chunk's columns c of V(r, c), for the block's 1024 rows.
template <class T, bool VEC>
__global__ void __launch_bounds__(kColwiseThreads) colwise_partial_kernel(
    const T* __restrict__ A, int64_t rows, int64_t cs, const int32_t* __restrict__ columns,
    const int64_t* __restrict__ chunk_begin, double* __restrict__ partial) {
    constexpr int V = VEC ? Vec<T>::n : 1;
    const int64_t r0 = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * V;
    if (r0 >= rows) return;
    const int64_t p0 = chunk_begin[blockIdx.x], p1 = chunk_begin[blockIdx.x + 1];
    double acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = 0.0;
    int64_t p = p0;
    if (r0 + V <= rows) {
        constexpr int U = 4;  // columns in flight per thread
        for (; p + U <= p1; p += U) {
            T x[U][V];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const T* src = A + static_cast<int64_t>(__ldg(columns + p + u)) * cs + r0;
                if constexpr (VEC) {
                    load_vector(src, x[u]);
                } else {
                    x[u][0] = *src;
                }
            }
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
                for (int e = 0; e < V; ++e) acc[e] += to_double(x[u][e]);
        }
    }
    for (; p < p1; ++p) {
        const T* src = A + static_cast<int64_t>(__ldg(columns + p)) * cs + r0;
#pragma unroll
        for (int e = 0; e < V; ++e)
            if (r0 + e < rows) acc[e] += to_double(src[e]);
    }
    double* dst = partial + static_cast<int64_t>(blockIdx.x) * rows + r0;
#pragma unroll
    for (int e = 0; e < V; ++e)
        if (r0 + e < rows) dst[e] = acc[e];
}

// out[r, k] = sum of partial[c, r] over label k's chunks [group_end[k-1], group_end[k]).
__global__ void fold_build_kernel(const double* __restrict__ partial, int64_t rows,
                                  const int32_t* __restrict__ group_end, int K, double* __restrict__ out) {
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
         r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int c = 0;
        for (int k = 0; k < K; ++k) {
            double s = 0.0;
            for (const int end = group_end[k]; c < end; ++c) s += partial[static_cast<int64_t>(c) * rows + r];
            out[r * K + k] = s;
        }
    }
}

// For each (from, to) group g in order: s = its chunks' sum; out[r, from] -= s; out[r, to] += s.
__global__ void fold_update_kernel(const double* __restrict__ partial, int64_t rows,
                                   const int32_t* __restrict__ group_end, const int32_t* __restrict__ group_from,
                                   const int32_t* __restrict__ group_to, int n_groups, int K,
                                   double* __restrict__ out) {
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
         r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int c = 0;
        double* o = out + r * K;
        for (int g = 0; g < n_groups; ++g) {
            double s = 0.0;
            for (const int end = group_end[g]; c < end; ++c) s += partial[static_cast<int64_t>(c) * rows + r];
            o[group_from[g]] -= s;
            o[group_to[g]] += s;
        }
    }
}

// Device counting sort (stable): per-block label counts, a label-major exclusive scan of them,
// then each block writes its elements in order (rank within a warp by __match_any_sync, warps in
// order through shared counts).
constexpr int kSortBlock = 2048;
constexpr int kSortThreads = 256;
constexpr int kSortMaxLabels = 1024;

__global__ void __launch_bounds__(kSortThreads) label_histogram_kernel(const int32_t* __restrict__ lab, int64_t n,
                                                                       int K, int blocks, int32_t* __restrict__ hist) {
    extern __shared__ int counts[];
    for (int k = threadIdx.x; k < K; k += blockDim.x) counts[k] = 0;
    __syncthreads();
    const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kSortBlock, b1 = min(n, b0 + kSortBlock);
    for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) atomicAdd(&counts[lab[i]], 1);
    __syncthreads();
    for (int k = threadIdx.x; k < K; k += blockDim.x) hist[static_cast<int64_t>(k) * blocks + blockIdx.x] = counts[k];
}

// In place exclusive prefix sum of a[0, n) by one block of 1024 threads.
__global__ void __launch_bounds__(1024) exclusive_scan_kernel(int32_t* __restrict__ a, int64_t n) {
    __shared__ int32_t sums[1024];
    const int t = threadIdx.x;
    const int64_t per = (n + blockDim.x - 1) / blockDim.x;
    const int64_t i0 = min(n, t * per), i1 = min(n, i0 + per);
    int32_t s = 0;
    for (int64_t i = i0; i < i1; ++i) s += a[i];
    sums[t] = s;
    __syncthreads();
    for (int o = 1; o < static_cast<int>(blockDim.x); o <<= 1) {
        const int32_t v = t >= o ? sums[t - o] : 0;
        __syncthreads();
        sums[t] += v;
        __syncthreads();
    }
    int32_t run = t > 0 ? sums[t - 1] : 0;
    for (int64_t i = i0; i < i1; ++i) {
        const int32_t v = a[i];
        a[i] = run;
        run += v;
    }
}

__global__ void __launch_bounds__(kSortThreads) stable_scatter_kernel(const int32_t* __restrict__ lab, int64_t n,
                                                                      int K, int blocks,
                                                                      const int32_t* __restrict__ offsets,
                                                                      int32_t* __restrict__ out) {
    extern __shared__ int sm[];
    int* running = sm;     // K: elements of each label placed by earlier rounds
    int* counts = sm + K;  // warps x K: this round's elements of each label per warp
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int k = threadIdx.x; k < K; k += blockDim.x) running[k] = 0;
    const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kSortBlock, b1 = min(n, b0 + kSortBlock);
    for (int64_t base = b0; base < b1; base += blockDim.x) {
        for (int j = threadIdx.x; j < warps * K; j += blockDim.x) counts[j] = 0;
        __syncthreads();
        const int64_t i = base + threadIdx.x;
        const bool valid = i < b1;
        const int k = valid ? lab[i] : -1;
        const unsigned same = __match_any_sync(0xffffffffu, k);
        const int rank = __popc(same & ((1u << lane) - 1u));
        if (valid && rank == 0) counts[warp * K + k] = __popc(same);
        __syncthreads();
        if (valid) {
            int pos = offsets[static_cast<int64_t>(k) * blocks + blockIdx.x] + running[k] + rank;
            for (int w = 0; w < warp; ++w) pos += counts[w * K + k];
            out[pos] = static_cast<int32_t>(i);
        }
        __syncthreads();
        for (int kk = threadIdx.x; kk < K; kk += blockDim.x) {
            int t = 0;
            for (int w = 0; w < warps; ++w) t += counts[w * K + kk];
            running[kk] += t;
        }
        __syncthreads();
    }
}

// Columns grouped (groups in order), cut into chunks of at most `len` columns each.
struct Chunks {
    std::vector<int64_t> begin;      // n_chunks + 1 offsets into the column list
    std::vector<int32_t> group_end;  // per group: one past its last chunk
};

Chunks make_chunks(const std::vector<int64_t>& group_begin, int64_t len) {
    Chunks ch;
    ch.begin.push_back(0);
    for (size_t g = 0; g + 1 < group_begin.size(); ++g) {
        for (int64_t p = group_begin[g]; p < group_begin[g + 1]; p += len)
            ch.begin.push_back(std::min(group_begin[g + 1], p + len));
        ch.group_end.push_back(static_cast<int32_t>(ch.begin.size() - 1));
    }
    return ch;
}

// Chunk length for `n` columns in `groups` groups over a view with `strips` strips of rows.
int64_t chunk_length(int64_t n, int64_t groups, int64_t strips, int64_t rows) {
    int64_t len = std::max(kMinChunk, ceil_div(n * strips, kColwiseBlocks));
    while ((ceil_div(n, len) + groups) * rows * static_cast<int64_t>(sizeof(double)) > kMaxPartialBytes && len < n)
        len *= 2;
    return len;
}

// Sums the columns of each chunk into ws.partial (chunks x rows). `columns` is the device list
// of (sorted) column indices; the chunk starts are uploaded from the host.
template <class T>
void launch_colwise_partial(const TypedView<T>& V, const int32_t* columns, const Chunks& ch, TableWorkspace& ws,
                            cudaStream_t stream) {
    const int64_t n_chunks = static_cast<int64_t>(ch.begin.size()) - 1;
    ws.partial.resize(static_cast<size_t>(std::max<int64_t>(n_chunks, 1) * V.rows));
    if (n_chunks == 0) return;
    ws.offsets.upload(ch.begin.data(), ch.begin.size(), stream);
    const bool vec = aligned16(V.data) && (V.cs * static_cast<int64_t>(sizeof(T))) % 16 == 0;
    const int per_thread = vec ? Vec<T>::n : 1;
    const int64_t strips = ceil_div(V.rows, int64_t{kColwiseThreads} * per_thread);
    if (strips > 65535) throw std::invalid_argument("the GPU tables support at most 65535 x 1024 rows per view");
    if (n_chunks > INT32_MAX) throw std::invalid_argument("too many chunks");
    const dim3 grid(static_cast<unsigned>(n_chunks), static_cast<unsigned>(strips));
    if (vec)
        colwise_partial_kernel<T, true><<<grid, kColwiseThreads, 0, stream>>>(V.data, V.rows, V.cs, columns,
                                                                             ws.offsets.data(), ws.partial.data());
    else
        colwise_partial_kernel<T, false><<<grid, kColwiseThreads, 0, stream>>>(V.data, V.rows, V.cs, columns,
                                                                              ws.offsets.data(), ws.partial.data());
    ULCMOD_CUDA_LAUNCHED();
}

int64_t strips_of(const Matrix& V) {
    const bool vec = aligned16(V.data) && (V.col_stride * V.itemsize()) % 16 == 0;
    return ceil_div(V.rows, int64_t{kColwiseThreads} * (vec ? 16 / V.itemsize() : 1));
}

unsigned fold_grid(int64_t rows) { return static_cast<unsigned>(std::min<int64_t>(ceil_div(rows, 256), 8192)); }

// Stable counting sort of the columns by label into ws.ints; returns each label's first position
// (K + 1 entries). On the device for up to kSortMaxLabels labels, else on the host.
std::vector<int64_t> sort_by_label(const int32_t* d_lab, const int32_t* h_lab, int64_t n, int K, TableWorkspace& ws,
                                   cudaStream_t stream) {
    std::vector<int64_t> begin(K + 1, 0);
    if (K > kSortMaxLabels) {
        for (int64_t c = 0; c < n; ++c) ++begin[h_lab[c] + 1];
        std::partial_sum(begin.begin(), begin.end(), begin.begin());
        std::vector<int32_t>& columns = ws.host_ints;
        columns.resize(n);
        std::vector<int64_t> next(begin.begin(), begin.end() - 1);
        for (int64_t c = 0; c < n; ++c) columns[next[h_lab[c]]++] = static_cast<int32_t>(c);
        ws.ints.upload(columns.data(), n, stream);
        return begin;
    }
    const int64_t blocks = ceil_div(n, kSortBlock);
    ws.sort.resize(static_cast<size_t>(K * blocks));
    ws.ints.resize(static_cast<size_t>(n));
    label_histogram_kernel<<<static_cast<unsigned>(blocks), kSortThreads, K * sizeof(int), stream>>>(
        d_lab, n, K, static_cast<int>(blocks), ws.sort.data());
    ULCMOD_CUDA_LAUNCHED();
    exclusive_scan_kernel<<<1, 1024, 0, stream>>>(ws.sort.data(), K * blocks);
    ULCMOD_CUDA_LAUNCHED();
    const size_t smem = (1 + kSortThreads / 32) * static_cast<size_t>(K) * sizeof(int);
    stable_scatter_kernel<<<static_cast<unsigned>(blocks), kSortThreads, smem, stream>>>(
        d_lab, n, K, static_cast<int>(blocks), ws.sort.data(), ws.ints.data());
    ULCMOD_CUDA_LAUNCHED();
    std::vector<int32_t>& offsets = ws.host_ints;
    offsets.resize(K * blocks);
    ULCMOD_CUDA(cudaMemcpyAsync(offsets.data(), ws.sort.data(), offsets.size() * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream));
    ULCMOD_CUDA(cudaStreamSynchronize(stream));
    for (int k = 0; k < K; ++k) begin[k] = offsets[static_cast<size_t>(k) * blocks];
    begin[K] = n;
    return begin;
}

void build_colwise(const Matrix& V, const int32_t* d_lab, const int32_t* h_lab, int K, double* d_out,
                   TableWorkspace& ws, cudaStream_t stream) {
    const std::vector<int64_t> begin = sort_by_label(d_lab, h_lab, V.cols, K, ws, stream);
    const Chunks ch = make_chunks(begin, chunk_length(V.cols, K, strips_of(V), V.rows));
    dispatch_view(V, [&](const auto& tv) { launch_colwise_partial(tv, ws.ints.data(), ch, ws, stream); });
    ws.groups.upload(ch.group_end.data(), ch.group_end.size(), stream);
    fold_build_kernel<<<fold_grid(V.rows), 256, 0, stream>>>(ws.partial.data(), V.rows, ws.groups.data(), K, d_out);
    ULCMOD_CUDA_LAUNCHED();
}

void update_colwise(const Matrix& V, const std::vector<Move>& moves, int K, double* d_out, TableWorkspace& ws,
                    cudaStream_t stream) {
    // Moves grouped by (from, to) pair: each group's columns are summed once, then subtracted from
    // `from` and added to `to`.
    std::vector<Move> sorted(moves);
    std::stable_sort(sorted.begin(), sorted.end(), [](const Move& a, const Move& b) {
        return a.from != b.from ? a.from < b.from : a.to < b.to;
    });
    std::vector<int32_t> columns(sorted.size()), from, to;
    std::vector<int64_t> begin{0};
    for (size_t i = 0; i < sorted.size(); ++i) {
        columns[i] = static_cast<int32_t>(sorted[i].index);
        if (i == 0 || sorted[i].from != sorted[i - 1].from || sorted[i].to != sorted[i - 1].to) {
            if (i > 0) begin.push_back(static_cast<int64_t>(i));
            from.push_back(sorted[i].from);
            to.push_back(sorted[i].to);
        }
    }
    begin.push_back(static_cast<int64_t>(sorted.size()));
    const int64_t groups = static_cast<int64_t>(from.size());
    const Chunks ch = make_chunks(begin, chunk_length(static_cast<int64_t>(sorted.size()), groups, strips_of(V), V.rows));
    ws.ints.upload(columns.data(), columns.size(), stream);
    dispatch_view(V, [&](const auto& tv) { launch_colwise_partial(tv, ws.ints.data(), ch, ws, stream); });
    std::vector<int32_t> groups_host(3 * groups);
    std::copy(ch.group_end.begin(), ch.group_end.end(), groups_host.begin());
    std::copy(from.begin(), from.end(), groups_host.begin() + groups);
    std::copy(to.begin(), to.end(), groups_host.begin() + 2 * groups);
    ws.groups.upload(groups_host.data(), groups_host.size(), stream);
    const int32_t* g = ws.groups.data();
    fold_update_kernel<<<fold_grid(V.rows), 256, 0, stream>>>(ws.partial.data(), V.rows, g, g + groups, g + 2 * groups,
                                                              static_cast<int>(groups), K, d_out);
    ULCMOD_CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------------------------
// Rowwise update: one thread per table row gathers the moved columns of its line.

template <class T, bool SMEM>
__global__ void __launch_bounds__(128) update_rowwise_kernel(const T* __restrict__ A, int64_t rows, int64_t rs,
                                                             const int32_t* __restrict__ mv, int n, int K,
                                                             double* __restrict__ out) {
    extern __shared__ double delta[];  // K x blockDim, thread-private columns
    const int t = threadIdx.x, bd = blockDim.x;
    const int64_t r = static_cast<int64_t>(blockIdx.x) * bd + t;
    if (r >= rows) return;
    const int32_t *cols = mv, *from = mv + n, *to = mv + 2 * n;
    const T* row = A + r * rs;
    double* o = out + r * K;
    if constexpr (SMEM)
        for (int k = 0; k < K; ++k) delta[k * bd + t] = 0.0;
    constexpr int U = 4;  // gathers in flight
    int m = 0;
    for (; m < n; m += U) {
        double v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) v[u] = m + u < n ? to_double(row[__ldg(cols + m + u)]) : 0.0;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (m + u >= n) break;
            const int a = __ldg(from + m + u), b = __ldg(to + m + u);
            if constexpr (SMEM) {
                delta[a * bd + t] -= v[u];
                delta[b * bd + t] += v[u];
            } else {
                o[a] -= v[u];
                o[b] += v[u];
            }
        }
    }
    if constexpr (SMEM)
        for (int k = 0; k < K; ++k) o[k] += delta[k * bd + t];
}

template <class T>
void launch_update_rowwise(const TypedView<T>& V, const std::vector<Move>& moves, int K, double* d_out,
                           TableWorkspace& ws, cudaStream_t stream) {
    const int n = static_cast<int>(moves.size());
    std::vector<int32_t>& h = ws.host_ints;
    h.resize(3 * static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        h[i] = static_cast<int32_t>(moves[i].index);
        h[n + i] = moves[i].from;
        h[2 * n + i] = moves[i].to;
    }
    ws.ints.upload(h.data(), h.size(), stream);
    constexpr int threads = 128;
    const size_t smem = static_cast<size_t>(K) * threads * sizeof(double);
    const unsigned grid = static_cast<unsigned>(ceil_div(V.rows, threads));
    if (smem <= 40 * 1024)
        update_rowwise_kernel<T, true><<<grid, threads, smem, stream>>>(V.data, V.rows, V.rs, ws.ints.data(), n, K, d_out);
    else
        update_rowwise_kernel<T, false><<<grid, threads, 0, stream>>>(V.data, V.rows, V.rs, ws.ints.data(), n, K, d_out);
    ULCMOD_CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------------------------
// Diagonal, candidates, labels

constexpr int kReduceThreads = 256;

// Fixed-order block sum (deterministic for a fixed launch shape).
__device__ double block_sum(double v) {
    __shared__ double warp_sums[kReduceThreads / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < kReduceThreads / 32; ++w) s += warp_sums[w];
    return s;
}

__global__ void __launch_bounds__(kReduceThreads) diagonal_kernel(const double* __restrict__ T,
                                                                  const int32_t* __restrict__ lab, int64_t rows,
                                                                  int K, double* __restrict__ block_sums) {
    double s = 0.0;
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
         r += static_cast<int64_t>(gridDim.x) * blockDim.x)
        s += T[r * K + lab[r]];
    s = block_sum(s);
    if (threadIdx.x == 0) block_sums[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kReduceThreads) candidate_flags_kernel(
    const double* __restrict__ T, const int32_t* __restrict__ lab, int64_t rows, int K,
    const double* __restrict__ c, const uint8_t* __restrict__ leave, double slack, uint8_t* __restrict__ flags,
    int32_t* __restrict__ block_counts) {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int f = 0;
    if (r < rows) {
        const int a = lab[r];
        f = leave[a] && row_margin(T + r * K, a, c, K, slack) > 0.0;
        flags[r] = static_cast<uint8_t>(f);
    }
    const int n = __syncthreads_count(f);
    if (threadIdx.x == 0) block_counts[blockIdx.x] = n;
}

__global__ void __launch_bounds__(kReduceThreads) candidate_compact_kernel(
    const double* __restrict__ T, int64_t rows, int K, const uint8_t* __restrict__ flags,
    const int64_t* __restrict__ block_offsets, int64_t* __restrict__ out_rows, double* __restrict__ out_entries) {
    __shared__ int warp_counts[kReduceThreads / 32];
    const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool f = r < rows && flags[r];
    const unsigned ballot = __ballot_sync(0xffffffffu, f);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    if (!f) return;
    int64_t pos = block_offsets[blockIdx.x] + __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < warp; ++w) pos += warp_counts[w];
    out_rows[pos] = r;
    for (int k = 0; k < K; ++k) out_entries[pos * K + k] = T[r * K + k];
}

__global__ void scatter_labels_kernel(int32_t* __restrict__ labels, const int32_t* __restrict__ mv, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) labels[mv[i]] = mv[n + i];
}

}  // namespace

namespace {
__global__ void add_into_kernel(double* __restrict__ out, const double* __restrict__ in, int64_t n) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[i] += in[i];
}
}  // namespace

void add_into(double* d_out, const double* d_in, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    const int64_t blocks = std::min<int64_t>(ceil_div(n, 256), 4096);
    add_into_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(d_out, d_in, n);
    ULCMOD_CUDA_LAUNCHED();
}

void set_rowwise_variant(int variant) {
    if (variant < 0 || variant > 4) throw std::invalid_argument("rowwise variant must be 0 to 4");
    g_rowwise_variant = variant;
}

Layout layout_of(const Matrix& V) {
    if (V.col_stride == 1 && V.row_stride >= V.cols) return Layout::Rowwise;
    if (V.row_stride == 1 && V.col_stride >= V.rows) return Layout::Colwise;
    throw std::invalid_argument(
        "A on the GPU must have one unit stride (C- or F-ordered, or a slice of one along its other axis); "
        "pass a contiguous copy, e.g. A.contiguous()");
}

void build_table(const Matrix& V, const int32_t* d_col_labels, const int32_t* h_col_labels, int K, double* d_out,
                 TableWorkspace& ws, cudaStream_t stream) {
    if (V.rows == 0) return;
    if (layout_of(V) == Layout::Rowwise)
        dispatch_view(V, [&](const auto& tv) { launch_build_rowwise(tv, d_col_labels, K, d_out, stream); });
    else
        build_colwise(V, d_col_labels, h_col_labels, K, d_out, ws, stream);
}

void update_table(const Matrix& V, const std::vector<Move>& moves, int K, double* d_out, TableWorkspace& ws,
                  cudaStream_t stream) {
    if (moves.empty() || V.rows == 0) return;
    if (layout_of(V) == Layout::Rowwise)
        dispatch_view(V, [&](const auto& tv) { launch_update_rowwise(tv, moves, K, d_out, ws, stream); });
    else
        update_colwise(V, moves, K, d_out, ws, stream);
}

bool update_is_cheaper(const Matrix& V, int64_t n_moves) {
    const double rebuild = static_cast<double>(V.rows) * static_cast<double>(V.cols) * V.itemsize();
    const double per_move = layout_of(V) == Layout::Rowwise
                                ? kRowwiseGatherPenalty * kSectorBytes * static_cast<double>(V.rows)
                                : kColwiseUpdatePenalty * static_cast<double>(V.rows) * V.itemsize();
    return per_move * static_cast<double>(n_moves) < rebuild;
}

double diagonal(const double* d_T, const int32_t* d_labels, int64_t rows, int K, TableWorkspace& ws,
                cudaStream_t stream) {
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(ceil_div(rows, kReduceThreads), 1024));
    ws.partial.resize(static_cast<size_t>(blocks));
    diagonal_kernel<<<static_cast<unsigned>(blocks), kReduceThreads, 0, stream>>>(d_T, d_labels, rows, K,
                                                                                 ws.partial.data());
    ULCMOD_CUDA_LAUNCHED();
    ws.host_partial.resize(blocks);
    ULCMOD_CUDA(cudaMemcpyAsync(ws.host_partial.data(), ws.partial.data(), blocks * sizeof(double),
                                cudaMemcpyDeviceToHost, stream));
    ULCMOD_CUDA(cudaStreamSynchronize(stream));
    double D = 0.0;
    for (double v : ws.host_partial) D += v;
    return D;
}

void candidates(const double* d_T, const int32_t* d_labels, int64_t rows, const MoveRule& rule, Candidates& out,
                TableWorkspace& ws, cudaStream_t stream) {
    out.clear();
    if (rows == 0) return;
    const int K = rule.K;
    const int64_t blocks = ceil_div(rows, kReduceThreads);
    if (blocks > INT32_MAX) throw std::invalid_argument("too many rows");
    ws.rule.upload(rule.c.data(), rule.c.size(), stream);
    ws.bytes.resize(static_cast<size_t>(rows + K));
    uint8_t* leave = ws.bytes.data() + rows;
    ULCMOD_CUDA(cudaMemcpyAsync(leave, rule.leave.data(), K, cudaMemcpyHostToDevice, stream));
    ws.counts.resize(static_cast<size_t>(blocks));
    candidate_flags_kernel<<<static_cast<unsigned>(blocks), kReduceThreads, 0, stream>>>(
        d_T, d_labels, rows, K, ws.rule.data(), leave, rule.slack, ws.bytes.data(), ws.counts.data());
    ULCMOD_CUDA_LAUNCHED();
    ws.host_ints.resize(blocks);
    ULCMOD_CUDA(cudaMemcpyAsync(ws.host_ints.data(), ws.counts.data(), blocks * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream));
    ULCMOD_CUDA(cudaStreamSynchronize(stream));
    ws.host_offsets.resize(blocks);
    int64_t total = 0;
    for (int64_t b = 0; b < blocks; ++b) {
        ws.host_offsets[b] = total;
        total += ws.host_ints[b];
    }
    if (total == 0) return;
    ws.offsets.upload(ws.host_offsets.data(), blocks, stream);
    ws.out_rows.resize(static_cast<size_t>(total));
    ws.out_entries.resize(static_cast<size_t>(total * K));
    candidate_compact_kernel<<<static_cast<unsigned>(blocks), kReduceThreads, 0, stream>>>(
        d_T, rows, K, ws.bytes.data(), ws.offsets.data(), ws.out_rows.data(), ws.out_entries.data());
    ULCMOD_CUDA_LAUNCHED();
    out.rows.resize(total);
    out.entries.resize(total * K);
    ULCMOD_CUDA(cudaMemcpyAsync(out.rows.data(), ws.out_rows.data(), total * sizeof(int64_t),
                                cudaMemcpyDeviceToHost, stream));
    ULCMOD_CUDA(cudaMemcpyAsync(out.entries.data(), ws.out_entries.data(), total * K * sizeof(double),
                                cudaMemcpyDeviceToHost, stream));
    ULCMOD_CUDA(cudaStreamSynchronize(stream));
}

void scatter_labels(int32_t* d_labels, const std::vector<Move>& moves, TableWorkspace& ws, cudaStream_t stream) {
    const int n = static_cast<int>(moves.size());
    if (n == 0) return;
    std::vector<int32_t>& h = ws.host_ints;
    h.resize(2 * static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        h[i] = static_cast<int32_t>(moves[i].index);
        h[n + i] = moves[i].to;
    }
    ws.ints.upload(h.data(), h.size(), stream);
    scatter_labels_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, stream>>>(d_labels, ws.ints.data(), n);
    ULCMOD_CUDA_LAUNCHED();
}

}  // namespace ulcmod::cuda
