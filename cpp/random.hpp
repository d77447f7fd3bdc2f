// A small seeded generator (SplitMix64) so results depend only on the seed, not on the
// standard library's distributions, which differ between implementations.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace ulcmod {

inline uint64_t next_u64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Integer in [0, n) by the multiply-shift method; its bias, at most n / 2^64, is negligible.
inline uint64_t next_below(uint64_t& state, uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next_u64(state)) * n) >> 64);
}

// Uniform double in [0, 1).
inline double next_unit(uint64_t& state) { return (next_u64(state) >> 11) * 0x1.0p-53; }

template <class T>
void shuffle_in_place(std::vector<T>& v, uint64_t& state) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next_below(state, i)]);
}

}  // namespace ulcmod
