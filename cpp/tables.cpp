#include "tables.hpp"

#include <algorithm>
#include <cmath>

#include "parallel.hpp"

namespace ulcmod {
namespace {

// Rows of the view are contiguous: scatter-add rows into K accumulators. Four rows go together
// so each label lookup serves four elements, and even/odd columns use separate accumulator sets
// so neighbouring columns with the same label do not wait on each other.
template <class T>
void build_row_contiguous(const TypedMatrix<T>& A, const int32_t* lab, int K, double* out) {
    constexpr int R = 4;
    const int64_t cols = A.cols, cs = A.cs;
    parallel_for((A.rows + R - 1) / R, 4, [&](int64_t begin, int64_t end) {
        std::vector<double> acc(2 * R * static_cast<size_t>(K));
        for (int64_t g = begin; g < end; ++g) {
            const int64_t r0 = g * R, nr = std::min<int64_t>(R, A.rows - r0);
            const T* p[R];
            for (int j = 0; j < R; ++j) p[j] = A.row_ptr(r0 + std::min<int64_t>(j, nr - 1));
            std::fill(acc.begin(), acc.end(), 0.0);
            double* even = acc.data();
            double* odd = even + R * K;
            int64_t c = 0;
            for (; c + 2 <= cols; c += 2) {
                double* a = even + lab[c] * R;
                double* b = odd + lab[c + 1] * R;
                for (int j = 0; j < R; ++j) a[j] += load(p[j][c * cs]);
                for (int j = 0; j < R; ++j) b[j] += load(p[j][(c + 1) * cs]);
            }
            for (; c < cols; ++c) {
                double* a = even + lab[c] * R;
                for (int j = 0; j < R; ++j) a[j] += load(p[j][c * cs]);
            }
            for (int64_t j = 0; j < nr; ++j)
                for (int k = 0; k < K; ++k) out[(r0 + j) * K + k] = even[k * R + j] + odd[k * R + j];
        }
    });
}

// Columns of the view are contiguous: walk the columns and add each one, for a block of rows,
// into a K x block buffer (vectorisable), then transpose the buffer into the table. When the
// view has few rows (the sample table of a C-ordered A) each thread instead takes a range of
// columns over all rows, streaming whole contiguous columns, and the per-thread buffers are summed.
template <class T>
void add_columns(const TypedMatrix<T>& A, const int32_t* lab, int64_t r0, int64_t len, int64_t c0,
                 int64_t c1, int64_t ld, double* buf) {
    for (int64_t c = c0; c < c1; ++c) {
        const T* p = A.data + r0 * A.rs + c * A.cs;
        double* dst = buf + static_cast<int64_t>(lab[c]) * ld;
        if (A.rs == 1) {
            for (int64_t i = 0; i < len; ++i) dst[i] += load(p[i]);
        } else {
            for (int64_t i = 0; i < len; ++i) dst[i] += load(p[i * A.rs]);
        }
    }
}

template <class T>
void build_col_contiguous(const TypedMatrix<T>& A, const int32_t* lab, int K, double* out) {
    const int64_t threads = max_threads();
    if (threads > 1 && A.rows * K * 8 <= (int64_t{4} << 20)) {
        std::vector<std::vector<double>> bufs(threads);
        parallel_for(threads, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
                bufs[t].assign(static_cast<size_t>(K) * A.rows, 0.0);
                add_columns(A, lab, 0, A.rows, A.cols * t / threads, A.cols * (t + 1) / threads,
                            A.rows, bufs[t].data());
            }
        });
        for (int64_t i = 0; i < A.rows; ++i)
            for (int k = 0; k < K; ++k) {
                double v = 0.0;
                for (const auto& b : bufs) v += b[k * A.rows + i];
                out[i * K + k] = v;
            }
        return;
    }
    const int64_t block = 512;
    const int64_t n_blocks = (A.rows + block - 1) / block;
    parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
        std::vector<double> buf(static_cast<size_t>(K) * block);
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t r0 = b * block;
            const int64_t len = std::min(block, A.rows - r0);
            std::fill(buf.begin(), buf.end(), 0.0);
            add_columns(A, lab, r0, len, 0, A.cols, block, buf.data());
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
        std::vector<double> buf(row_contiguous ? 0 : static_cast<size_t>(K) * block);
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
                // Contiguous columns: accumulate the block's changes in a K-major buffer
                // (vectorised, like the build), then add them to the table once.
                std::fill(buf.begin(), buf.end(), 0.0);
                const int64_t len = r1 - r0;
                for (const Move& m : moves) {
                    const T* p = A.data + r0 * A.rs + m.index * A.cs;
                    double* sub = buf.data() + static_cast<int64_t>(m.from) * block;
                    double* add = buf.data() + static_cast<int64_t>(m.to) * block;
                    if (A.rs == 1) {
                        for (int64_t i = 0; i < len; ++i) {
                            const double v = load(p[i]);
                            sub[i] -= v;
                            add[i] += v;
                        }
                    } else {
                        for (int64_t i = 0; i < len; ++i) {
                            const double v = load(p[i * A.rs]);
                            sub[i] -= v;
                            add[i] += v;
                        }
                    }
                }
                for (int64_t i = 0; i < len; ++i)
                    for (int k = 0; k < K; ++k) out[(r0 + i) * K + k] += buf[k * block + i];
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
