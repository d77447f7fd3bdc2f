// The compute-backend seam of IterD. A backend holds the activations A (in host or device
// memory), a copy of both sides' labels, and the two block-sum tables:
//
//     table(Neurons) = R, N x K: R[i, k] = sum of A[i, j] over samples j in module k
//     table(Samples) = C, M x K: C[j, k] = sum of A[i, j] over neurons i in module k
//
// It builds and updates the tables (choosing update or rebuild by its own cost model) and
// scores every row of a table in parallel against a MoveRule. The sweeps themselves, the
// module sizes and the scalars D, P, H live on the host in IterDState, which receives its
// backend when it is created: the CPU kernels (cpu_backend.cpp) and the CUDA kernels (cuda/)
// implement the same interface, so the sweep has no device-specific code.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "move_rule.hpp"
#include "tables.hpp"

namespace ulcmod {

// Which side's rows a call is about: the neurons (rows of A, table R) or the samples (C).
enum class Side : int { Neurons = 0, Samples = 1 };

inline Side other_side(Side s) { return s == Side::Neurons ? Side::Samples : Side::Neurons; }
inline int index_of(Side s) { return static_cast<int>(s); }

// Rows that may have an improving move, in ascending order, with their K table entries each:
// rows of `table` when it is set (a backend whose table is in host memory hands it over instead
// of copying the rows; valid until the table changes), else copies in `entries`.
struct Candidates {
    std::vector<int64_t> rows;
    std::vector<double> entries;  // rows.size() x K, when table is null
    const double* table = nullptr;

    void clear() {
        rows.clear();
        entries.clear();
        table = nullptr;
    }
    const double* row(size_t c, int K) const {
        return table ? table + rows[c] * K : entries.data() + c * static_cast<int64_t>(K);
    }
};

// Starts fetching a row's K table entries into cache: rows scored out of order (candidates,
// rows a partial scan rescores) are scattered over the table, beyond what hardware prefetchers see.
// Every cache line the row touches: a row that starts inside a line ends in one more.
inline void prefetch_row(const double* row, int K) {
    const uintptr_t last = reinterpret_cast<uintptr_t>(row + K) - 1;
    for (uintptr_t line = reinterpret_cast<uintptr_t>(row) & ~uintptr_t{63}; line <= last; line += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(line));
}

// Work done on tables, to tell a run's cost in passes over A.
struct TableStats {
    int64_t builds = 0;        // full builds (one pass over A each)
    int64_t update_reads = 0;  // elements of A read by incremental updates
    int64_t full_scans = 0;    // scans of every row of a table
    int64_t partial_scans = 0; // scans of only the rows near improving (see candidates)
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;
    virtual int64_t rows(Side side) const = 0;  // N for Neurons, M for Samples
    virtual int K() const = 0;

    // Replace one side's labels. The other side's table is rebuilt at its next refresh.
    virtual void set_labels(Side side, const int32_t* labels) = 0;
    // Rows of `side` changed module (from -> to), in the order given. Queued for the other
    // side's table, which depends on these labels.
    virtual void move(Side side, const std::vector<Move>& moves) = 0;
    // Bring table(side) up to date with the labels of the other side.
    virtual void refresh(Side side) = 0;
    // After refresh: D = sum over rows r of table(side)[r, label(r)], in float64.
    virtual double diagonal(Side side) = 0;
    // After refresh: every row of `side` whose padded margin (row_margin) under `rule` is
    // positive and whose module can lose a member. With `full` the backend scores every row and
    // remembers the margins and the rule; otherwise it may rescore only the rows whose
    // remembered margin plus rule_drift(remembered rule, rule)[label] is positive (and rows moved
    // since), which finds the same rows. The host calls it with full=true after each refresh.
    virtual void candidates(Side side, const MoveRule& rule, bool full, Candidates& out) = 0;
    // After refresh: table(side), rows(side) x K row-major, in host memory (a device backend
    // copies it down). Valid until the next call that changes the table.
    virtual const double* host_table(Side side) = 0;
    virtual TableStats stats() const = 0;
};

// A backend made by another extension module (the CUDA one, built separately from the same
// sources) reaches IterDState as a PyCapsule named kBackendCapsule holding a `Backend*` made by
// `new`. The receiver takes ownership and renames the capsule kBackendCapsuleTaken; the capsule's
// destructor deletes the backend only while it still has its first name. Bump the version when
// this interface changes, so modules built from different sources refuse each other.
constexpr const char* kBackendCapsule = "ulcmod.Backend.v2";
constexpr const char* kBackendCapsuleTaken = "ulcmod.Backend.v2.taken";

enum class TablePolicy { Auto, Rebuild, Update };

// A full scan of a host table (rows x K) as the CPU backend does it: the rows whose padded
// margin under `rule` is positive and whose module can lose a member. For backends that hold
// parts of a table elsewhere (one per cluster worker) and score them with the CPU kernels.
void scan_table(const double* table, const int32_t* labels, int64_t rows, const MoveRule& rule,
                Candidates& out);

// The CPU backend: reads A in place (any dtype and strides); the view must outlive it.
std::unique_ptr<Backend> make_cpu_backend(const Matrix& A, int K, TablePolicy policy = TablePolicy::Auto);

}  // namespace ulcmod
