#include "tables.hpp"

#include <algorithm>
#include <cmath>

#include "parallel.hpp"

namespace ulcmod {
namespace {

// Rows of the view are contiguous: scatter-add each row into K accumulators. Four accumulator
// sets break the dependency chain when neighbouring columns share a label.
template <class T>
void build_row_contiguous(const TypedMatrix<T>& A, const int32_t* lab, int K, double* out) {
    const int64_t cols = A.cols;
    parallel_for(A.rows, 16, [&](int64_t begin, int64_t end) {
        std::vector<double> acc(4 * static_cast<size_t>(K));
        for (int64_t r = begin; r < end; ++r) {
            std::fill(acc.begin(), acc.end(), 0.0);
            const T* p = A.row_ptr(r);
            double* a0 = acc.data();
            double* a1 = a0 + K;
            double* a2 = a1 + K;
            double* a3 = a2 + K;
            int64_t c = 0;
            for (; c + 4 <= cols; c += 4) {
                a0[lab[c]] += load(p[c * A.cs]);
                a1[lab[c + 1]] += load(p[(c + 1) * A.cs]);
                a2[lab[c + 2]] += load(p[(c + 2) * A.cs]);
                a3[lab[c + 3]] += load(p[(c + 3) * A.cs]);
            }
            for (; c < cols; ++c) a0[lab[c]] += load(p[c * A.cs]);
            double* o = out + r * K;
            for (int k = 0; k < K; ++k) o[k] = a0[k] + a1[k] + a2[k] + a3[k];
        }
    });
}

// Columns of the view are contiguous: walk the columns and add each one, for a block of rows,
// into a K x block buffer (vectorisable), then transpose the buffer into the table.
template <class T>
void build_col_contiguous(const TypedMatrix<T>& A, const int32_t* lab, int K, double* out) {
    const int64_t block = 512;
    const int64_t n_blocks = (A.rows + block - 1) / block;
    parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
        std::vector<double> buf(static_cast<size_t>(K) * block);
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t r0 = b * block;
            const int64_t len = std::min(block, A.rows - r0);
            std::fill(buf.begin(), buf.end(), 0.0);
            for (int64_t c = 0; c < A.cols; ++c) {
                const T* p = A.data + r0 * A.rs + c * A.cs;
                double* dst = buf.data() + static_cast<int64_t>(lab[c]) * block;
                if (A.rs == 1) {
                    for (int64_t i = 0; i < len; ++i) dst[i] += load(p[i]);
                } else {
                    for (int64_t i = 0; i < len; ++i) dst[i] += load(p[i * A.rs]);
                }
            }
            for (int64_t i = 0; i < len; ++i)
                for (int k = 0; k < K; ++k) out[(r0 + i) * K + k] = buf[k * block + i];
        }
    });
}

template <class T>
void apply_moves(const TypedMatrix<T>& A, const std::vector<Move>& moves, int K, double* out,
                 bool row_contiguous) {
    const int64_t block = 256;
    const int64_t n_blocks = (A.rows + block - 1) / block;
    parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t r0 = b * block, r1 = std::min(A.rows, r0 + block);
            if (row_contiguous) {
                for (int64_t r = r0; r < r1; ++r) {
                    double* o = out + r * K;
                    for (const Move& m : moves) {
                        const double v = A(r, m.index);
                        o[m.from] -= v;
                        o[m.to] += v;
                    }
                }
            } else {
                for (const Move& m : moves) {
                    for (int64_t r = r0; r < r1; ++r) {
                        const double v = A(r, m.index);
                        out[r * K + m.from] -= v;
                        out[r * K + m.to] += v;
                    }
                }
            }
        }
    });
}

}  // namespace

void build_table(const Matrix& A, const int32_t* col_labels, int K, double* out) {
    dispatch(A, [&](const auto& typed) {
        if (A.row_contiguous())
            build_row_contiguous(typed, col_labels, K, out);
        else
            build_col_contiguous(typed, col_labels, K, out);
    });
}

void update_table(const Matrix& A, std::vector<Move>& moves, int K, double* out) {
    if (moves.empty()) return;
    std::sort(moves.begin(), moves.end(),
              [](const Move& a, const Move& b) { return a.index < b.index; });
    dispatch(A, [&](const auto& typed) { apply_moves(typed, moves, K, out, A.row_contiguous()); });
}

bool update_is_cheaper(const Matrix& A, int64_t n_moves) {
    // Cost in cache lines read. A rebuild streams every line of A once. An update reads one
    // element per row and moved column: along contiguous columns that is a streamed segment,
    // across contiguous rows each element costs its own line (shared only when moved columns
    // are neighbours), and such scattered reads run at about a quarter of streaming speed.
    const double per_line = 64.0 / static_cast<double>(A.itemsize());
    const double rows = static_cast<double>(A.rows), cols = static_cast<double>(A.cols);
    const double moved = static_cast<double>(n_moves);
    const double rebuild = rows * cols / per_line;
    double update;
    if (A.row_contiguous())
        update = 4.0 * rows * std::min(moved, cols / per_line);
    else
        update = 2.0 * rows * moved / per_line;
    return update < rebuild;
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
