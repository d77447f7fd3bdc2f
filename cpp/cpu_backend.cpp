// The CPU backend: tables in host memory, built and updated by the kernels of tables.cpp and
// scored by OpenMP threads. A is read in place.
#include <algorithm>
#include <limits>
#include <memory>

#include "backend.hpp"
#include "interrupt.hpp"
#include "parallel.hpp"
#include "simd_clones.hpp"

namespace ulcmod {
namespace {

// One scan of rows [begin, end) of a table (see CpuBackend::candidates): a row is rescored
// unless its remembered margin plus its module's drift since the round it was scored in is <= 0.
struct Scan {
    const double* table;
    const int32_t* labels;
    const MoveRule* rule;
    const double* drift;  // per remembered round, K per module; null for a full scan
    double* margins;      // null: nothing remembered
    uint16_t* round_of;
    uint16_t round;
    uint8_t* flags;       // out: 1 for rows that may improve
};

// The rows a partial scan rescores are scattered over the table: they are listed a block at a
// time, then scored with the rows kScanAhead places further on the list already being fetched.
constexpr int64_t kScanBlock = 256;
constexpr int64_t kScanAhead = 4;

ULCMOD_SIMD_CLONES void scan_rows(const Scan& s, int64_t begin, int64_t end) {
    const MoveRule& rule = *s.rule;
    const int K = rule.K;
    int64_t todo[kScanBlock];
    for (int64_t b0 = begin; b0 < end; b0 += kScanBlock) {
        const int64_t b1 = std::min(end, b0 + kScanBlock);
        int64_t n = 0;
        for (int64_t r = b0; r < b1; ++r) {
            todo[n] = r;
            n += !s.drift || s.margins[r] + s.drift[int64_t{s.round_of[r]} * K + s.labels[r]] > 0.0;
        }
        for (int64_t i = 0; i < n; ++i) {
            if (s.drift && i + kScanAhead < n) prefetch_row(s.table + todo[i + kScanAhead] * K, K);  // scattered rows
            const int64_t r = todo[i];
            const int a = s.labels[r];
            const double m = row_margin(s.table + r * K, a, rule.c.data(), K, rule.slack);
            if (s.margins) {
                s.margins[r] = m;
                s.round_of[r] = s.round;
            }
            s.flags[r] = m > 0.0 && rule.leave[a];
        }
    }
}

// Rows with a set flag, ascending; their entries are rows of T (copied with `copy`).
void collect(const std::vector<uint8_t>& flags, const double* T, int K, bool copy, Candidates& out) {
    out.clear();
    for (int64_t r = 0; r < static_cast<int64_t>(flags.size()); ++r)
        if (flags[r]) out.rows.push_back(r);
    if (!copy) {
        out.table = T;
        return;
    }
    out.entries.resize(out.rows.size() * K);
    for (size_t c = 0; c < out.rows.size(); ++c) std::copy_n(T + out.rows[c] * K, K, out.entries.data() + c * K);
}

class CpuBackend final : public Backend {
public:
    CpuBackend(const Matrix& A, int K, TablePolicy policy)
        : view_{A, A.transposed()}, K_(K), policy_(policy) {
        for (int s = 0; s < 2; ++s) labels_[s].assign(view_[s].rows, 0);
    }

    std::string name() const override { return "cpu"; }
    int64_t rows(Side side) const override { return view_[index_of(side)].rows; }
    int K() const override { return K_; }

    void set_labels(Side side, const int32_t* labels) override {
        const int s = index_of(side), t = index_of(other_side(side));
        std::copy(labels, labels + labels_[s].size(), labels_[s].begin());
        built_[t] = false;
        pending_[t].clear();
        scanned_[s] = false;
    }

    void move(Side side, const std::vector<Move>& moves) override {
        const int s = index_of(side), t = index_of(other_side(side));
        for (const Move& m : moves) {
            labels_[s][m.index] = m.to;
            if (scanned_[s]) margins_[s][m.index] = kRescan;
        }
        if (built_[t]) pending_[t].insert(pending_[t].end(), moves.begin(), moves.end());
    }

    void refresh(Side side) override {
        const int t = index_of(side);
        if (built_[t] && pending_[t].empty()) return;
        const Matrix& view = view_[t];
        std::vector<Move>& pending = pending_[t];
        if (!table_[t]) table_[t].reset(new double[static_cast<size_t>(view.rows) * K_]);
        const bool update =
            built_[t] && (policy_ == TablePolicy::Update ||
                          (policy_ == TablePolicy::Auto &&
                           update_is_cheaper(view, static_cast<int64_t>(pending.size()))));
        try {
            if (update) {
                update_table(view, pending, K_, table_[t].get());
                stats_.update_reads += static_cast<int64_t>(pending.size()) * view.rows;
            } else {
                build_table(view, labels_[index_of(other_side(side))].data(), K_, table_[t].get());
                ++stats_.builds;
                built_[t] = true;
            }
        } catch (const Interrupted&) {  // the table is half done: the next refresh rebuilds it
            built_[t] = false;
            pending.clear();
            throw;
        }
        pending.clear();
        scanned_[t] = false;  // remembered margins belong to the old table
    }

    double diagonal(Side side) override {
        const int s = index_of(side);
        const double* T = table_[s].get();
        const int32_t* lab = labels_[s].data();
        double D = 0.0;
        for (int64_t r = 0; r < view_[s].rows; ++r) D += T[r * K_ + lab[r]];
        return D;
    }

    // Each row remembers its margin and the round whose rule it was scored under; a partial scan
    // rescores a row only if that margin plus its module's drift from that round's rule to this
    // one is positive (rule_drift), so rows rescored recently are held to a small drift. The
    // candidates' entries are the table's own rows (no copy).
    void candidates(Side side, const MoveRule& rule, bool full, Candidates& out) override {
        const int s = index_of(side);
        const int64_t n = view_[s].rows;
        const double* T = table_[s].get();
        const int32_t* lab = labels_[s].data();
        std::vector<MoveRule>& rules = rules_[s];
        const bool partial = !full && scanned_[s] && rules.size() < kMaxRounds;
        if (partial) {
            ++stats_.partial_scans;
        } else {
            ++stats_.full_scans;
            rules.clear();
            margins_[s].resize(n);
            round_of_[s].assign(n, 0);
            scanned_[s] = true;
        }
        rules.push_back(rule);
        std::vector<double> drift;  // only a partial scan reads it
        if (partial)
            for (const MoveRule& then : rules) {
                const std::vector<double> d = rule_drift(then, rule);
                drift.insert(drift.end(), d.begin(), d.end());
            }
        flags_.assign(n, 0);
        const Scan scan{T, lab, &rule, partial ? drift.data() : nullptr, margins_[s].data(),
                        round_of_[s].data(), static_cast<uint16_t>(rules.size() - 1), flags_.data()};
        parallel_for(n, 4096, [&](int64_t begin, int64_t end) { scan_rows(scan, begin, end); });
        collect(flags_, T, K_, false, out);
    }

    const double* host_table(Side side) override { return table_[index_of(side)].get(); }
    TableStats stats() const override { return stats_; }

private:
    // Margin of a row that moved since it was last scored: always rescored.
    static constexpr double kRescan = std::numeric_limits<double>::infinity();
    // Rounds remembered per series of partial scans (round numbers are 16-bit); then a full scan.
    static constexpr size_t kMaxRounds = 1 << 16;

    Matrix view_[2];  // [Neurons] = A, [Samples] = A^T: rows of view s are the rows of table s
    int K_;
    TablePolicy policy_;
    std::vector<int32_t> labels_[2];
    // Left uninitialised: a build writes every entry from its own threads (zero-filling a fresh
    // 512 MB table on one thread first took longer than the build).
    std::unique_ptr<double[]> table_[2];
    bool built_[2] = {false, false};
    std::vector<Move> pending_[2];  // moved columns of view t not yet applied to table t
    std::vector<double> margins_[2];      // per row: padded margin when last scored
    std::vector<uint16_t> round_of_[2];   // per row: the round (index into rules_) it was scored in
    std::vector<MoveRule> rules_[2];      // the rules of the rounds since the last full scan
    bool scanned_[2] = {false, false};
    std::vector<uint8_t> flags_;
    TableStats stats_;
};

}  // namespace

void scan_table(const double* table, const int32_t* labels, int64_t rows, const MoveRule& rule,
                Candidates& out) {
    std::vector<uint8_t> flags(rows, 0);
    const Scan scan{table, labels, &rule, nullptr, nullptr, nullptr, 0, flags.data()};
    parallel_for(rows, 4096, [&](int64_t begin, int64_t end) { scan_rows(scan, begin, end); });
    collect(flags, table, rule.K, true, out);
}

std::unique_ptr<Backend> make_cpu_backend(const Matrix& A, int K, TablePolicy policy) {
    return std::make_unique<CpuBackend>(A, K, policy);
}

}  // namespace ulcmod
