// Run-time ISA dispatch of the table kernels. The kernels (table_kernels.hpp) are compiled once
// per level from one source: tables_isa_default.cpp (baseline: SSE2 on x86-64, NEON on AArch64),
// tables_isa_avx2.cpp (AVX2 + FMA + F16C) and tables_isa_avx512.cpp (AVX-512 F/BW/VL/DQ), the
// last two only for x86-64 with GCC or Clang. The best level the CPU and the OS support is
// picked once, at first use; the environment variable ULCMOD_ISA=default|avx2|avx512 caps it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "matrix.hpp"
#include "tables.hpp"

namespace ulcmod {

// The columns of a view cut into groups of `size` consecutive columns (the last one may be
// shorter), and within each group its columns in label order: position i of group g is column
// g * size + offset[g * size + i]. The group's runs of equal labels are r in [first_run[g],
// first_run[g + 1]): label run_label[r] over positions [end of the previous run (0 for the
// first), run_end[r]). Built once per table build (tables.cpp), shared read-only by the tasks.
// Settings of the row layout's build ride along (tables.cpp picks them, table_kernels.hpp
// explains them): prefetch_next_tile for short rows, and stream_output to write a table larger
// than the caches with non-temporal stores.
struct LabelGroups {
    int64_t size = 0;
    bool prefetch_next_tile = false;
    bool stream_output = false;
    const uint16_t* offset = nullptr;
    const int32_t* run_label = nullptr;
    const int32_t* run_end = nullptr;
    const int64_t* first_run = nullptr;
};

// One level's kernels. Each works on a task: rows [r0, r1) of a view, and for the builds the
// column groups [g0, g1). Row r's results go to target[(r - r0) * ld + k] (ld may be negative).
struct KernelSet {
    const char* name;
    // Block sums, assigned. `build_rows` for views whose rows are contiguous (col_stride 1 is
    // the fast path), `build_cols` for views whose columns are (row_stride 1). Scratch:
    // kernel_scratch(...) doubles, 64-byte aligned.
    void (*build_rows)(const Matrix& A, int64_t r0, int64_t r1, int64_t g0, int64_t g1, const LabelGroups& groups,
                       int K, double* target, int64_t ld, double* scratch);
    void (*build_cols)(const Matrix& A, int64_t r0, int64_t r1, int64_t g0, int64_t g1, const LabelGroups& groups,
                       int K, double* target, int64_t ld, double* scratch);
    // Column moves, added: target[., to] += A(r, index), target[., from] -= A(r, index), for the
    // labels listed in `touched` (every from and to) only.
    void (*update_rows)(const Matrix& A, int64_t r0, int64_t r1, const Move* moves, int64_t n_moves,
                        const int32_t* touched, int n_touched, int K, double* target, int64_t ld, double* scratch);
    void (*update_cols)(const Matrix& A, int64_t r0, int64_t r1, const Move* moves, int64_t n_moves,
                        const int32_t* touched, int n_touched, int K, double* target, int64_t ld, double* scratch);
    // Rows rows[i] (or i when rows is null), i in [begin, end), of A widened to float (float16,
    // bfloat16, float32 input) or to double (float64 input), into dst row i - begin (leading
    // dimension ld), with each row's float64 sum in sums[i - begin].
    void (*widen_rows_f32)(const Matrix& A, const int64_t* rows, int64_t begin, int64_t end, float* dst,
                           int64_t ld, double* sums);
    void (*widen_rows_f64)(const Matrix& A, const int64_t* rows, int64_t begin, int64_t end, double* dst,
                           int64_t ld, double* sums);
};

// Shared by the driver and the kernels. Internal linkage (an unnamed namespace), so the copies in
// the AVX2/AVX-512 sources stay theirs (see simd.hpp).
namespace {

// Column layout: columns summed in registers before one buffer update (and streams read at a
// time).
constexpr int64_t kColChunk = 16;

// Stride of the K buffers of a column-layout task: its rows rounded up to 8, plus 8 when that is
// a multiple of 16, so the K buffers never sit a multiple of 4 KiB apart (same L1 cache set).
inline int64_t col_buffer_stride(int64_t task_rows) {
    const int64_t L = (task_rows + 7) / 8 * 8;
    return L % 16 == 0 ? L + 8 : L;
}

// Scratch doubles a task needs. Row layout: K accumulators of 8 rows, the column slots of one
// group (up to 8 doubles each), and room for an 8x8 block plus 8 table rows (row_tile_scratch);
// column layout: K buffers of the task's rows.
inline int64_t row_tile_scratch(int K) { return 64 + 8 * int64_t{K}; }
inline int64_t kernel_scratch(bool row_layout, int64_t task_rows, int K, int64_t group_size) {
    return row_layout ? 8 * int64_t{K} + 8 * group_size + row_tile_scratch(K) : int64_t{K} * col_buffer_stride(task_rows);
}

}  // namespace

// The kernels in use.
const KernelSet& kernels();
// Name of the level in use ("default", "avx2" or "avx512").
std::string isa_name();
// Levels compiled into this build, and those among them this CPU and OS can run (lowest first).
std::vector<std::string> isa_compiled();
std::vector<std::string> isa_supported();
// Use level `name` from now on (tests run every level in one process); throws
// std::invalid_argument if it is not compiled or not supported here.
void set_isa(const std::string& name);
// A note when ULCMOD_ISA holds something other than a level's name (then ignored), else "".
std::string isa_env_problem();

// The kernel sets, one per compiled level (defined in the tables_isa_*.cpp sources).
namespace isa_default {
extern const KernelSet kernels;
}
#ifdef ULCMOD_HAVE_AVX2
namespace isa_avx2 {
extern const KernelSet kernels;
}
#endif
#ifdef ULCMOD_HAVE_AVX512
namespace isa_avx512 {
extern const KernelSet kernels;
}
#endif

}  // namespace ulcmod
