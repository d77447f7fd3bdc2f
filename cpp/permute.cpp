#include "permute.hpp"

#include "interrupt.hpp"
#include "parallel.hpp"
#include "random.hpp"

namespace ulcmod {

namespace {

// Rows per parallel chunk: enough that a chunk's work (a row is thousands of draws) dwarfs the
// scheduling of it.
constexpr int64_t kMinRowsPerChunk = 16;

// The generator state of one row: the seed mixed with a hash of the row index, so rows start at
// unrelated points of SplitMix64's cycle (plain offsets seed + r * gamma would give every row the
// same stream, shifted by one draw per row).
uint64_t row_state(uint64_t seed, int64_t row) {
    uint64_t index = static_cast<uint64_t>(row);
    return seed ^ next_u64(index);
}

// The element as raw bits of its size: a permutation only moves values.
template <class Bits>
void permute_typed(const Matrix& A, Bits* out, uint64_t seed) {
    const Bits* a = static_cast<const Bits*>(A.data);
    const int64_t cols = A.cols;
    parallel_for(A.rows, kMinRowsPerChunk, [&](int64_t r0, int64_t r1) {
        if (interrupt_requested()) return;  // Ctrl-C: leave the remaining chunks undone
        for (int64_t r = r0; r < r1; ++r) {
            uint64_t state = row_state(seed, r);
            const Bits* src = a + r * A.row_stride;
            Bits* dst = out + r * cols;
            // Inside-out Fisher-Yates: after step j, dst[0..j] is a uniform permutation of
            // src[0..j]. One pass, reading A once in any layout.
            for (int64_t j = 0; j < cols; ++j) {
                const int64_t k = static_cast<int64_t>(next_below(state, static_cast<uint64_t>(j) + 1));
                if (k != j) dst[j] = dst[k];
                dst[k] = src[j * A.col_stride];
            }
        }
    });
}

}  // namespace

void permute_rows(const Matrix& A, void* out, uint64_t seed) {
    switch (A.itemsize()) {
        case 2:
            permute_typed(A, static_cast<uint16_t*>(out), seed);
            break;
        case 4:
            permute_typed(A, static_cast<uint32_t*>(out), seed);
            break;
        default:
            permute_typed(A, static_cast<uint64_t*>(out), seed);
    }
    check_interrupt();
}

}  // namespace ulcmod
