#include "interrupt.hpp"

namespace ulcmod {
namespace {

// Polling the host costs a GIL round trip: 50 ms keeps it negligible and Ctrl-C prompt.
constexpr auto kPollInterval = std::chrono::milliseconds(50);

std::atomic<bool> g_requested{false};
InterruptScope::Poll g_poll = nullptr;
std::thread::id g_owner;
std::chrono::steady_clock::time_point g_last_poll;
std::atomic<int> g_depth{0};  // nested or concurrent scopes share the outermost one

}  // namespace

InterruptScope::InterruptScope(Poll poll) {
    if (g_depth++ > 0) return;
    g_requested = false;
    g_poll = poll;
    g_owner = std::this_thread::get_id();
    g_last_poll = std::chrono::steady_clock::now();
}

InterruptScope::~InterruptScope() {
    if (--g_depth > 0) return;
    g_poll = nullptr;
    g_requested = false;
}

bool interrupt_requested() {
    if (g_requested.load(std::memory_order_relaxed)) return true;
    if (g_poll == nullptr || std::this_thread::get_id() != g_owner) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now - g_last_poll < kPollInterval) return false;
    g_last_poll = now;
    if (g_poll()) g_requested = true;
    return g_requested;
}

}  // namespace ulcmod
