// Table builds and updates: plans the tasks (blocks of rows, and column or move ranges when the
// rows alone cannot feed every thread), runs them on OpenMP threads with the kernels of the ISA
// level in use (isa.hpp), and sums partial tables in a fixed order so results do not depend on
// thread timing.
#include "tables.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "interrupt.hpp"
#include "isa.hpp"
#include "parallel.hpp"

namespace ulcmod {
namespace {

// Tuning numbers, chosen on the 2-core Zen 4 development machine by grids of per-thread CPU
// time against a one-thread pass (the "fraction (CPU)" of benchmarks/results/tables.md):
// elements per row-layout task: scheduling costs well under 1% while every thread gets many tasks.
constexpr int64_t kTaskElements = int64_t{1} << 18;
// columns per label-sorted group of a row-layout build: at least kRowGroup, and at least
// kRunLength per label so runs are long enough to amortise their loop; the group's column
// slots (8 elements each) within kRowSlotBytes so they stay in L1.
constexpr int64_t kRowGroup = 256;
constexpr int64_t kRunLength = 8;
constexpr int64_t kRowSlotBytes = int64_t{16} << 10;
// view rows per column-layout task: long enough runs per column for the memory system (whole
// columns of 4,000 rows read faster than halves), with its K buffers within kColBufferBytes
// (they take one read-modify-write per chunk of columns).
constexpr int64_t kColTaskRows = 4096;
constexpr int64_t kColBufferBytes = int64_t{1} << 20;
// Row-layout rows of at least kLongRun bytes are streamed well by the memory system once
// started; shorter ones are prefetched a tile ahead.
constexpr int64_t kLongRun = int64_t{2} << 10;
// Column layout (chunks of kColChunk columns, isa.hpp): groups of kColChunksPerLabel chunks per
// label on average, so that most runs of a
// group are whole chunks; at most kColGroupMax columns (offsets within a group are 16-bit).
constexpr int64_t kColChunksPerLabel = 4;
constexpr int64_t kColGroupMax = 4096;
// tables larger than this (about the L3 cache) are written with non-temporal stores.
constexpr int64_t kStreamBytes = int64_t{32} << 20;
// columns (or moves) below which a range is not worth a partial table of its own.
constexpr int64_t kMinPartWork = 256;
// memory allowed for partial tables, when the rows are too few to give every thread a block.
constexpr int64_t kPartialBytes = int64_t{64} << 20;
// elements below which one thread does the whole table: waking the others costs more.
constexpr int64_t kMinParallelElements = int64_t{1} << 16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up8(int64_t a) { return ceil_div(a, 8) * 8; }
int64_t col_task_rows(int K) { return std::clamp<int64_t>(kColBufferBytes / (8 * int64_t{K}) / 8 * 8, 64, kColTaskRows); }

// Runs task(t, scratch) for t in [0, n) on OpenMP threads, each thread with its own 64-byte
// aligned scratch of `scratch_doubles`, allocated before the parallel region (a failed
// allocation then throws normally instead of terminating inside it). Ctrl-C skips the tasks
// not yet started and throws Interrupted once the region is over (the output is then incomplete).
template <class F>
void run_tasks(int64_t n, int64_t elements, int64_t scratch_doubles, F&& task) {
    const int64_t useful = elements < kMinParallelElements ? 1 : n;
    const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_threads(), useful)));
    const int64_t stride = round_up8(scratch_doubles);
    std::vector<double> memory(static_cast<size_t>(threads * stride + 8));
    double* base = memory.data();
    while (reinterpret_cast<uintptr_t>(base) % 64 != 0) ++base;
    if (threads == 1) {
        for (int64_t t = 0; t < n; ++t) {
            check_interrupt();
            task(t, base);
        }
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
#endif
    for (int64_t t = 0; t < n; ++t) {
        if (interrupt_requested()) continue;
#ifdef _OPENMP
        task(t, base + omp_get_thread_num() * stride);
#else
        task(t, base);
#endif
    }
    check_interrupt();
}

// How a table's work is cut: view rows [b * block, (b + 1) * block) for b < n_blocks, each block
// split into `parts` ranges of work units (column groups for builds, moves for updates), each
// part with its own partial table when parts > 1.
struct Plan {
    int64_t block, n_blocks, parts;
};

// `units` work units of `unit_elements` elements per view row each, into K sums per row.
Plan make_plan(const Matrix& A, bool row_layout, int64_t units, int64_t unit_elements, int K) {
    const int64_t threads = max_threads(), rows = std::max<int64_t>(A.rows, 1);
    const int64_t want = threads > 1 ? 4 * threads : 1;  // tasks for an even load on busy cores
    const int64_t per_row = std::max<int64_t>(1, units * unit_elements);
    Plan p{8, 1, 1};
    p.block = row_layout ? round_up8(std::max<int64_t>(1, kTaskElements / per_row)) : col_task_rows(K);
    p.block = std::min(p.block, round_up8(rows));
    p.n_blocks = ceil_div(rows, p.block);
    if (p.n_blocks < want) {
        p.parts = std::min(ceil_div(want, p.n_blocks), std::max<int64_t>(1, per_row / kMinPartWork));
        p.parts = std::min(p.parts, units);
        p.parts = std::min(p.parts, std::max<int64_t>(1, kPartialBytes / (rows * int64_t{8} * K)));
        if (p.n_blocks * p.parts < want) {  // still too few: smaller blocks
            const int64_t least = row_layout ? 8 : 64;
            p.block = std::max(least, round_up8(ceil_div(rows, ceil_div(want, p.parts))));
            p.block = std::min(p.block, round_up8(rows));
            p.n_blocks = ceil_div(rows, p.block);
        }
    }
    return p;
}

// LabelGroups (isa.hpp) with their storage. Built in parallel over groups: each group's labels
// are counted (or sorted, when K is much larger than a group), its runs laid out after the
// previous groups' runs.
class OwnedGroups {
   public:
    OwnedGroups(const int32_t* labels, int64_t cols, int K, int64_t size)
        : size_(size), n_(ceil_div(cols, size)), offset_(cols), first_run_(n_ + 1, 0) {
        std::vector<int64_t> runs(n_);
        for_groups(labels, cols, K, [&](int64_t g, const std::vector<int32_t>& count, const Pairs&) {
            int64_t r = 0;
            for (int32_t c : count) r += c > 0;
            runs[g] = r;
        }, [&](int64_t g, const Pairs& pairs) {
            int64_t r = 0;
            for (size_t i = 0; i < pairs.size(); ++i) r += i == 0 || pairs[i].first != pairs[i - 1].first;
            runs[g] = r;
        });
        for (int64_t g = 0; g < n_; ++g) first_run_[g + 1] = first_run_[g] + runs[g];
        run_label_.resize(first_run_[n_]);
        run_end_.resize(first_run_[n_]);
        for_groups(labels, cols, K, [&](int64_t g, std::vector<int32_t>& count, const Pairs&) {
            const int64_t cb = g * size_, n = std::min(size_, cols - cb);
            int64_t r = first_run_[g], pos = 0;
            for (int k = 0; k < K; ++k) {
                if (count[k] == 0) continue;
                run_label_[r] = k;
                const int32_t c = count[k];
                count[k] = static_cast<int32_t>(pos);  // now the run's next free position
                pos += c;
                run_end_[r++] = static_cast<int32_t>(pos);
            }
            for (int64_t i = 0; i < n; ++i) offset_[cb + count[labels[cb + i]]++] = static_cast<uint16_t>(i);
        }, [&](int64_t g, const Pairs& pairs) {
            const int64_t cb = g * size_;
            int64_t r = first_run_[g];
            for (size_t i = 0; i < pairs.size(); ++i) {
                offset_[cb + i] = static_cast<uint16_t>(pairs[i].second);
                if (i + 1 == pairs.size() || pairs[i + 1].first != pairs[i].first) {
                    run_label_[r] = pairs[i].first;
                    run_end_[r++] = static_cast<int32_t>(i + 1);
                }
            }
        });
    }
    LabelGroups view() const {
        LabelGroups g;
        g.size = size_;
        g.offset = offset_.data();
        g.run_label = run_label_.data();
        g.run_end = run_end_.data();
        g.first_run = first_run_.data();
        return g;
    }
    int64_t count() const { return n_; }

   private:
    using Pairs = std::vector<std::pair<int32_t, int32_t>>;
    // Calls counted(g, label counts, -) per group, or sorted(g, (label, offset) pairs sorted)
    // when K is more than 4 times the group size.
    template <class Counted, class Sorted>
    void for_groups(const int32_t* labels, int64_t cols, int K, Counted&& counted, Sorted&& sorted) {
        parallel_for(n_, 64, [&](int64_t g0, int64_t g1) {
            std::vector<int32_t> count;
            Pairs pairs;
            for (int64_t g = g0; g < g1; ++g) {
                const int64_t cb = g * size_, n = std::min(size_, cols - cb);
                if (K <= 4 * n) {
                    count.assign(K, 0);
                    for (int64_t i = 0; i < n; ++i) ++count[labels[cb + i]];
                    counted(g, count, pairs);
                } else {
                    pairs.resize(n);
                    for (int64_t i = 0; i < n; ++i) pairs[i] = {labels[cb + i], static_cast<int32_t>(i)};
                    std::sort(pairs.begin(), pairs.end());
                    sorted(g, pairs);
                }
            }
        });
    }

    int64_t size_, n_;
    std::vector<uint16_t> offset_;
    std::vector<int32_t> run_label_, run_end_;
    std::vector<int64_t> first_run_;
};

// Where a view's table goes: out row r is target[r * ld]. A view whose contiguous axis runs
// backwards (stride -1) is turned around so the kernels see stride +1: reversed columns take
// reversed labels (builds) or mirrored indices (updates); reversed rows write the table bottom-up.
struct Normalised {
    Matrix A;
    bool row_layout;
    bool cols_reversed;
    double* target;
    int64_t ld;
};

Normalised normalise(const Matrix& A, double* out, int K) {
    Normalised n{A, A.row_contiguous(), false, out, K};
    const int64_t item = A.itemsize();
    const char* base = static_cast<const char*>(A.data);
    if (n.row_layout && A.col_stride == -1 && A.cols > 1) {
        n.A.data = base + (A.cols - 1) * A.col_stride * item;
        n.A.col_stride = 1;
        n.cols_reversed = true;
    } else if (!n.row_layout && A.row_stride == -1 && A.rows > 1) {
        n.A.data = base + (A.rows - 1) * A.row_stride * item;
        n.A.row_stride = 1;
        n.target = out + (A.rows - 1) * int64_t{K};
        n.ld = -int64_t{K};
    }
    return n;
}

// out rows (through target/ld) = (or +=) the sum of the parts' partial tables, in part order.
void reduce_parts(const std::vector<double>& partial, int64_t parts, int64_t rows, int K, double* target, int64_t ld,
                  bool add) {
    parallel_for(rows, 1024, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
            for (int k = 0; k < K; ++k) {
                double v = add ? target[r * ld + k] : 0.0;
                for (int64_t p = 0; p < parts; ++p) v += partial[(p * rows + r) * K + k];
                target[r * ld + k] = v;
            }
    });
}

}  // namespace

void build_table(const Matrix& A, const int32_t* col_labels, int K, double* out) {
    if (A.rows == 0) return;
    if (A.cols == 0) {
        std::fill(out, out + A.rows * K, 0.0);
        return;
    }
    Normalised n = normalise(A, out, K);
    std::vector<int32_t> reversed;
    if (n.cols_reversed) {
        reversed.assign(col_labels, col_labels + A.cols);
        std::reverse(reversed.begin(), reversed.end());
        col_labels = reversed.data();
    }
    const int64_t item = A.itemsize();
    const int64_t group = n.row_layout ? std::min(std::max(kRowGroup, kRunLength * K), kRowSlotBytes / (8 * item))
                                       : std::min(kColChunk * kColChunksPerLabel * K, kColGroupMax);
    const OwnedGroups groups(col_labels, A.cols, K, std::min(group, A.cols));
    LabelGroups G = groups.view();
    G.prefetch_next_tile = n.row_layout && A.cols * item < kLongRun;
    G.stream_output = A.rows * K * 8 > kStreamBytes;
    const Plan plan = make_plan(n.A, n.row_layout, groups.count(), G.size, K);
    const KernelSet& ks = kernels();
    auto kernel = n.row_layout ? ks.build_rows : ks.build_cols;
    std::vector<double> partial(plan.parts > 1 ? static_cast<size_t>(plan.parts * A.rows * K) : 0);
    run_tasks(plan.n_blocks * plan.parts, A.rows * A.cols, kernel_scratch(n.row_layout, plan.block, K, G.size),
              [&](int64_t t, double* scratch) {
        const int64_t b = t / plan.parts, p = t % plan.parts;
        const int64_t r0 = b * plan.block, r1 = std::min(A.rows, r0 + plan.block);
        const int64_t g0 = groups.count() * p / plan.parts, g1 = groups.count() * (p + 1) / plan.parts;
        if (plan.parts > 1)
            kernel(n.A, r0, r1, g0, g1, G, K, partial.data() + (p * A.rows + r0) * K, K, scratch);
        else
            kernel(n.A, r0, r1, g0, g1, G, K, n.target + r0 * n.ld, n.ld, scratch);
    });
    if (plan.parts > 1) reduce_parts(partial, plan.parts, A.rows, K, n.target, n.ld, false);
}

void update_table(const Matrix& A, std::vector<Move>& moves, int K, double* out) {
    if (moves.empty() || A.rows == 0) return;
    std::sort(moves.begin(), moves.end(), [](const Move& a, const Move& b) { return a.index < b.index; });
    Normalised n = normalise(A, out, K);
    const Move* list = moves.data();
    std::vector<Move> mirrored;
    if (n.cols_reversed) {  // column c of A is column cols - 1 - c of the turned view
        mirrored.assign(moves.rbegin(), moves.rend());
        for (Move& m : mirrored) m.index = A.cols - 1 - m.index;
        list = mirrored.data();
    }
    std::vector<int32_t> touched;
    std::vector<char> seen(K, 0);
    for (const Move& m : moves)
        for (int32_t k : {m.from, m.to})
            if (!seen[k]) seen[k] = 1, touched.push_back(k);
    const int64_t n_moves = static_cast<int64_t>(moves.size());
    const KernelSet& ks = kernels();
    const Plan plan = make_plan(n.A, n.row_layout, n_moves, 1, K);
    auto kernel = n.row_layout ? ks.update_rows : ks.update_cols;
    std::vector<double> partial(plan.parts > 1 ? static_cast<size_t>(plan.parts * A.rows * K) : 0);
    const int nt = static_cast<int>(touched.size());
    run_tasks(plan.n_blocks * plan.parts, A.rows * n_moves, kernel_scratch(n.row_layout, plan.block, K, 0),
              [&](int64_t t, double* scratch) {
        const int64_t b = t / plan.parts, p = t % plan.parts;
        const int64_t r0 = b * plan.block, r1 = std::min(A.rows, r0 + plan.block);
        const int64_t m0 = n_moves * p / plan.parts, m1 = n_moves * (p + 1) / plan.parts;
        if (plan.parts > 1)
            kernel(n.A, r0, r1, list + m0, m1 - m0, touched.data(), nt, K, partial.data() + (p * A.rows + r0) * K, K,
                   scratch);
        else
            kernel(n.A, r0, r1, list + m0, m1 - m0, touched.data(), nt, K, n.target + r0 * n.ld, n.ld, scratch);
    });
    if (plan.parts > 1) reduce_parts(partial, plan.parts, A.rows, K, n.target, n.ld, true);
}

bool update_is_cheaper(const Matrix& A, int64_t n_moves) {
    // A moved column costs as much as per_moved columns of a rebuild. Rows contiguous: each moved
    // column is one scattered element (one cache line) per row, read and added 8 rows at a time;
    // columns contiguous: a moved column streams like a built one but updates two labels' buffers
    // on its own (a build updates one per chunk of columns).
    // Measured with benchmarks/bench_table_update.py (results/table_update.md).
    const bool rows = A.row_contiguous();
    const int64_t item = A.itemsize();
    const double per_moved = item == 2 ? (rows ? 2.5 : 3.2) : item == 4 ? (rows ? 1.3 : 2.3) : (rows ? 1.0 : 1.5);
    return static_cast<double>(n_moves) * per_moved < static_cast<double>(A.cols);
}

int64_t first_nonfinite_row(const double* table, int64_t rows, int K) {
    std::atomic<int64_t> first{rows};
    parallel_for(rows, 4096, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < std::min(r1, first.load()); ++r) {
            double s = 0.0;
            for (int k = 0; k < K; ++k) s += table[r * K + k];
            if (std::isfinite(s)) continue;
            int64_t seen = first.load();
            while (r < seen && !first.compare_exchange_weak(seen, r)) {}
            return;
        }
    });
    return first < rows ? first.load() : -1;
}

}  // namespace ulcmod
