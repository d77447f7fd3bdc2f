// Block-sum tables on the GPU: T[r, k] = sum of V(r, c) over the columns c labelled k, in float64,
// for a view V of A (V = A for R, V = A^T for C), and the row-wise work the IterD sweep asks of a
// table: the diagonal sum, the rows that may have an improving move, incremental updates.
//
// A view is read in one of two layouts, chosen by its unit stride:
//  - Rowwise (col_stride 1): each table row is a contiguous line of V. One warp reduces a line
//    into per-lane float64 accumulators in shared memory (lane-private, so no atomics and no bank
//    conflicts), then the lanes' K sums are added up. Up to kRowwiseLabels labels per pass.
//  - Colwise (row_stride 1): the labelled columns are contiguous lines. The columns are sorted by
//    label (a stable counting sort on the device) and cut into chunks of one label each; a block
//    adds up its chunk's columns for 1024 consecutive table rows in float64 registers, and a
//    second kernel adds the chunks of each label in a fixed order.
// Both are deterministic (no floating-point atomics): the same input gives bit-identical tables.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend.hpp"
#include "common.hpp"
#include "matrix.hpp"
#include "move_rule.hpp"
#include "tables.hpp"

namespace ulcmod::cuda {

enum class Layout { Rowwise, Colwise };

// The layout a view is read in; throws std::invalid_argument when it has no unit stride.
Layout layout_of(const Matrix& V);

// Device scratch reused across calls (grows as needed).
struct TableWorkspace {
    DeviceBuffer<int32_t> ints;      // column indices, moves
    DeviceBuffer<int32_t> groups;    // per chunk group: last chunk (and from/to labels of updates)
    DeviceBuffer<int32_t> sort;      // counting sort: per-block label counts, then their offsets
    DeviceBuffer<int64_t> offsets;   // chunk starts / block offsets
    DeviceBuffer<double> partial;    // chunk partial sums, block partial sums
    DeviceBuffer<double> rule;       // K x K move-rule matrix
    DeviceBuffer<uint8_t> bytes;     // leave flags, candidate flags
    DeviceBuffer<int32_t> counts;    // per-block candidate counts
    DeviceBuffer<int64_t> out_rows;  // candidate rows
    DeviceBuffer<double> out_entries;
    std::vector<int32_t> host_ints;
    std::vector<int64_t> host_offsets;
    std::vector<double> host_partial;
};

// out (V.rows x K, row-major, device) = block sums of V's rows over the column labels. Labels are
// given both on the device (Rowwise reads them) and on the host (Colwise sorts them).
void build_table(const Matrix& V, const int32_t* d_col_labels, const int32_t* h_col_labels, int K,
                 double* d_out, TableWorkspace& ws, cudaStream_t stream);

// Apply column moves: out[r, from] -= V(r, c), out[r, to] += V(r, c).
void update_table(const Matrix& V, const std::vector<Move>& moves, int K, double* d_out,
                  TableWorkspace& ws, cudaStream_t stream);

// Whether applying n_moves column moves reads less than a rebuild (see the constants in tables.cu).
bool update_is_cheaper(const Matrix& V, int64_t n_moves);

// sum over rows r of T[r, labels[r]], in float64, in a fixed order.
double diagonal(const double* d_T, const int32_t* d_labels, int64_t rows, int K, TableWorkspace& ws,
                cudaStream_t stream);

// Rows whose padded margin (row_margin) under `rule` is positive and whose module can lose a
// member, ascending, with their K entries, copied to the host.
void candidates(const double* d_T, const int32_t* d_labels, int64_t rows, const MoveRule& rule,
                Candidates& out, TableWorkspace& ws, cudaStream_t stream);

// out[i] += in[i] for i < n (streamed builds add up the partial tables of their slabs).
void add_into(double* d_out, const double* d_in, int64_t n, cudaStream_t stream);

// Selects the Rowwise build kernel's variant (for benchmarks; see tables.cu).
void set_rowwise_variant(int variant);

// labels[m.index] = m.to for every move.
void scatter_labels(int32_t* d_labels, const std::vector<Move>& moves, TableWorkspace& ws,
                    cudaStream_t stream);

}  // namespace ulcmod::cuda
