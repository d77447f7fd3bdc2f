// The table kernels compiled for AVX-512 F/BW/VL/DQ (+ AVX2, FMA, F16C); flags in CMakeLists.txt.
#define ULCMOD_ISA_NS isa_avx512
#define ULCMOD_ISA_NAME "avx512"
#include "table_kernels.hpp"

#ifndef ULCMOD_SIMD_AVX512
#error "tables_isa_avx512.cpp must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c (CMakeLists.txt)"
#endif
