// Ctrl-C inside long core calls. The bindings open an InterruptScope around each long call on
// the calling thread, with a function that asks the host language whether the user interrupted
// (for Python: the GIL taken briefly and PyErr_CheckSignals). Loops call interrupt_requested()
// from any thread: it reads one atomic flag, and on the calling thread it also polls the host,
// at most every kPollInterval. Code inside OpenMP regions must not throw: there loops only stop
// early, and check_interrupt() after the region throws Interrupted.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>

namespace ulcmod {

struct Interrupted : std::exception {
    const char* what() const noexcept override { return "interrupted"; }
};

class InterruptScope {
public:
    using Poll = bool (*)();
    explicit InterruptScope(Poll poll);
    ~InterruptScope();
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;
};

// Whether the user asked to stop the current call. Cheap enough for every few thousand
// iterations of an inner loop.
bool interrupt_requested();

// Throws Interrupted if the user asked to stop. Not inside OpenMP regions.
inline void check_interrupt() {
    if (interrupt_requested()) throw Interrupted();
}

}  // namespace ulcmod
