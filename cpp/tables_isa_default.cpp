// The table kernels compiled for the baseline of the target (SSE2 on x86-64, NEON on AArch64): no extra flags.
#define ULCMOD_ISA_NS isa_default
#define ULCMOD_ISA_NAME "default"
#include "table_kernels.hpp"
