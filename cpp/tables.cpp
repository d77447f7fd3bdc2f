// Table builds and updates: plans the tasks (blocks of rows, and column or move ranges when the
// rows alone cannot feed every thread), runs them on OpenMP threads with the kernels of the ISA
// level in use (isa.hpp), and sums partial tables in a fixed order so results do not depend on
// thread timing.
#include "tables.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "isa.hpp"
#include "parallel.hpp"

namespace ulcmod {
namespace {

// Tuning numbers, chosen with benchmarks/bench_tables.py (results/tables.md):
// elements per row-layout task: scheduling costs well under 1% while every thread gets many tasks.
constexpr int64_t kTaskElements = int64_t{1} << 18;
// a column-layout task's K x rows buffer: small enough to stay in L2 while columns stream past.
constexpr int64_t kColBufferBytes = int64_t{256} << 10;
// columns (or moves) below which a range is not worth a partial table of its own.
constexpr int64_t kMinPartWork = 256;
// memory allowed for partial tables, when the rows are too few to give every thread a block.
constexpr int64_t kPartialBytes = int64_t{64} << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up8(int64_t a) { return ceil_div(a, 8) * 8; }

// Runs task(t, scratch) for t in [0, n) on OpenMP threads, each thread with its own 64-byte
// aligned scratch of `scratch_doubles`, allocated before the parallel region (a failed
// allocation then throws normally instead of terminating inside it).
template <class F>
void run_tasks(int64_t n, int64_t scratch_doubles, F&& task) {
    const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_threads(), n)));
    const int64_t stride = round_up8(scratch_doubles);
    std::vector<double> memory(static_cast<size_t>(threads * stride + 8));
    double* base = memory.data();
    while (reinterpret_cast<uintptr_t>(base) % 64 != 0) ++base;
    if (threads == 1) {
        for (int64_t t = 0; t < n; ++t) task(t, base);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
#endif
    for (int64_t t = 0; t < n; ++t) {
#ifdef _OPENMP
        task(t, base + omp_get_thread_num() * stride);
#else
        task(t, base);
#endif
    }
}

// How a table's work is cut: view rows [b * block, (b + 1) * block) for b < n_blocks, each block
// split into `parts` ranges of columns (builds) or of moves (updates), each part with its own
// partial table when parts > 1.
struct Plan {
    bool row_layout;
    int64_t block, n_blocks, parts;
};

Plan make_plan(const Matrix& A, bool row_layout, int64_t work, int K) {
    const int64_t threads = max_threads(), rows = std::max<int64_t>(A.rows, 1);
    const int64_t want = threads > 1 ? 4 * threads : 1;  // tasks for an even load on busy cores
    Plan p{row_layout, 8, 1, 1};
    if (row_layout)
        p.block = round_up8(std::max<int64_t>(1, kTaskElements / std::max<int64_t>(work, 1)));
    else
        p.block = std::max<int64_t>(64, kColBufferBytes / (8 * int64_t{K}) / 8 * 8);
    p.block = std::min(p.block, round_up8(rows));
    p.n_blocks = ceil_div(rows, p.block);
    if (p.n_blocks < want) {
        p.parts = std::min(ceil_div(want, p.n_blocks), std::max<int64_t>(1, work / kMinPartWork));
        p.parts = std::min(p.parts, std::max<int64_t>(1, kPartialBytes / (rows * K * 8)));
        if (p.n_blocks * p.parts < want) {  // still too few: smaller blocks
            p.block = std::max(row_layout ? int64_t{8} : int64_t{64}, round_up8(ceil_div(rows, ceil_div(want, p.parts))));
            p.block = std::min(p.block, round_up8(rows));
            p.n_blocks = ceil_div(rows, p.block);
        }
    }
    return p;
}

// Where a view's table goes: out row r is target[r * ld]. A view whose contiguous axis runs
// backwards (stride -1) is turned around so the kernels see stride +1: reversed columns take
// reversed labels (builds) or mirrored indices (updates); reversed rows write the table bottom-up.
struct Normalised {
    Matrix A;
    bool row_layout;
    bool cols_reversed = false;
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
    Normalised n = normalise(A, out, K);
    std::vector<int32_t> reversed;
    if (n.cols_reversed) {
        reversed.assign(col_labels, col_labels + A.cols);
        std::reverse(reversed.begin(), reversed.end());
        col_labels = reversed.data();
    }
    if (A.cols == 0) {
        for (int64_t r = 0; r < A.rows; ++r) std::fill(out + r * K, out + (r + 1) * K, 0.0);
        return;
    }
    const KernelSet& ks = kernels();
    const Plan plan = make_plan(n.A, n.row_layout, A.cols, K);
    auto kernel = n.row_layout ? ks.build_rows : ks.build_cols;
    std::vector<double> partial(plan.parts > 1 ? static_cast<size_t>(plan.parts * A.rows * K) : 0);
    run_tasks(plan.n_blocks * plan.parts, kernel_scratch(n.row_layout, plan.block, K), [&](int64_t t, double* scratch) {
        const int64_t b = t / plan.parts, p = t % plan.parts;
        const int64_t r0 = b * plan.block, r1 = std::min(A.rows, r0 + plan.block);
        const int64_t c0 = A.cols * p / plan.parts, c1 = A.cols * (p + 1) / plan.parts;
        if (plan.parts > 1)
            kernel(n.A, r0, r1, c0, c1, col_labels, K, partial.data() + (p * A.rows + r0) * K, K, scratch);
        else
            kernel(n.A, r0, r1, c0, c1, col_labels, K, n.target + r0 * n.ld, n.ld, scratch);
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
    const Plan plan = make_plan(n.A, n.row_layout, n_moves, K);
    auto kernel = n.row_layout ? ks.update_rows : ks.update_cols;
    std::vector<double> partial(plan.parts > 1 ? static_cast<size_t>(plan.parts * A.rows * K) : 0);
    const int nt = static_cast<int>(touched.size());
    run_tasks(plan.n_blocks * plan.parts, kernel_scratch(n.row_layout, plan.block, K), [&](int64_t t, double* scratch) {
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
    // An update reads one element per row and moved column; a rebuild streams every element.
    // Measured on 100k x 7k float16/float32 (benchmarks/results/table_update.md): a moved column
    // costs about as much as 8 streamed columns when rows are contiguous (scattered reads within
    // each row) and about 4 when columns are contiguous, so those are the break-even points.
    const int64_t per_moved = A.row_contiguous() ? 8 : 4;
    return n_moves * per_moved < A.cols;
}

int64_t first_nonfinite_row(const double* table, int64_t rows, int K) {
    for (int64_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (int k = 0; k < K; ++k) s += table[r * K + k];
        if (!std::isfinite(s)) return r;
    }
    return -1;
}

}  // namespace ulcmod
