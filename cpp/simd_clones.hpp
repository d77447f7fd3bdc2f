// ULCMOD_SIMD_CLONES: compile a hot loop twice, for AVX2/FMA (x86-64-v3) and for the baseline,
// and pick one at load time by the CPU, so one portable build vectorises where it can.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define ULCMOD_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ULCMOD_SIMD_CLONES
#endif
