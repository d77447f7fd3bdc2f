#include "isa.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace ulcmod {
namespace {

struct Level {
    const char* name;
    const KernelSet* kernels;
    bool (*runs_here)();
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// XCR0: the register state the OS saves on context switches. CPUID alone says what the CPU
// has, not whether the OS lets programs use it.
uint64_t os_saved_state() {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t{hi} << 32) | lo;
}
constexpr uint64_t kYmmState = 0x6;    // SSE + AVX
constexpr uint64_t kZmmState = 0xe6;   // + opmask, ZMM0-15 upper halves, ZMM16-31

[[maybe_unused]] bool avx2_runs() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
           (os_saved_state() & kYmmState) == kYmmState;
}
[[maybe_unused]] bool avx512_runs() {
    __builtin_cpu_init();
    return avx2_runs() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           (os_saved_state() & kZmmState) == kZmmState;
}
#endif

bool always() { return true; }

// Lowest first.
const Level kLevels[] = {
    {"default", &isa_default::kernels, always},
#ifdef ULCMOD_HAVE_AVX2
    {"avx2", &isa_avx2::kernels, avx2_runs},
#endif
#ifdef ULCMOD_HAVE_AVX512
    {"avx512", &isa_avx512::kernels, avx512_runs},
#endif
};
constexpr int kNumLevels = sizeof(kLevels) / sizeof(kLevels[0]);

const char* const kKnownNames[] = {"default", "avx2", "avx512"};

// The cap from ULCMOD_ISA: an index into kKnownNames, or -1 for none.
int env_cap() {
    const char* v = std::getenv("ULCMOD_ISA");
    if (!v || !*v) return -1;
    for (int i = 0; i < 3; ++i)
        if (std::string(v) == kKnownNames[i]) return i;
    return -1;
}

int rank(const char* name) {
    for (int i = 0; i < 3; ++i)
        if (std::string(name) == kKnownNames[i]) return i;
    return 0;
}

const Level* pick() {
    const int cap = env_cap();
    const Level* best = &kLevels[0];
    for (const Level& l : kLevels)
        if (l.runs_here() && (cap < 0 || rank(l.name) <= cap)) best = &l;
    return best;
}

std::atomic<const Level*>& active() {
    static std::atomic<const Level*> level{pick()};
    return level;
}

}  // namespace

const KernelSet& kernels() { return *active().load(std::memory_order_relaxed)->kernels; }

std::string isa_name() { return active().load(std::memory_order_relaxed)->name; }

std::vector<std::string> isa_compiled() {
    std::vector<std::string> names;
    for (const Level& l : kLevels) names.emplace_back(l.name);
    return names;
}

std::vector<std::string> isa_supported() {
    std::vector<std::string> names;
    for (const Level& l : kLevels)
        if (l.runs_here()) names.emplace_back(l.name);
    return names;
}

void set_isa(const std::string& name) {
    for (const Level& l : kLevels) {
        if (name != l.name) continue;
        if (!l.runs_here())
            throw std::invalid_argument("ISA level '" + name + "' is compiled but this CPU or OS cannot run it");
        active().store(&l, std::memory_order_relaxed);
        return;
    }
    std::string known;
    for (const Level& l : kLevels) known += (known.empty() ? "" : ", ") + std::string(l.name);
    throw std::invalid_argument("ISA level '" + name + "' is not compiled into this build (available: " + known + ")");
}

std::string isa_env_problem() {
    const char* v = std::getenv("ULCMOD_ISA");
    if (!v || !*v || env_cap() >= 0) return "";
    return std::string("ULCMOD_ISA='") + v + "' is not one of default, avx2, avx512; it is ignored";
}

}  // namespace ulcmod
