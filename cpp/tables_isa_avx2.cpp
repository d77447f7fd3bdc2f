// The table kernels compiled for AVX2 + FMA + F16C (x86-64-v3's vector set); flags in CMakeLists.txt.
#define ULCMOD_ISA_NS isa_avx2
#define ULCMOD_ISA_NAME "avx2"
#include "table_kernels.hpp"

#ifndef ULCMOD_SIMD_AVX2
#error "tables_isa_avx2.cpp must be compiled with -mavx2 -mfma -mf16c (CMakeLists.txt)"
#endif
