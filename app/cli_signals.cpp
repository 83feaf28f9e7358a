#include "cli_signals.h"

#include "train/events.h"

#include <atomic>
#include <csignal>

namespace quantscope::cli {

namespace {
volatile std::sig_atomic_t g_signal = 0; // the signal that came, 0 for none
// Set before the handlers are installed, cleared when the scope ends (the handler stays, for a
// late signal); atomic, as a handler on another thread may read it then.
std::atomic<StopToken*> g_token{nullptr};
static_assert(std::atomic<StopToken*>::is_always_lock_free);

extern "C" void onStopSignal(int sig)
{
    g_signal = sig;
    if (StopToken* t = g_token.load()) t->requestStop(); // an atomic store: lock-free, so safe in a handler
}

void install(int sig, void (*handler)(int), int flags)
{
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = flags;
    ::sigaction(sig, &sa, nullptr);
}
} // namespace

StopSignalScope::StopSignalScope(StopToken* token)
{
    g_signal = 0;
    g_token = token;
    for (int sig : {SIGINT, SIGTERM}) install(sig, onStopSignal, SA_RESETHAND | SA_RESTART);
}

StopSignalScope::~StopSignalScope()
{
    g_token = nullptr; // the handler below only sets the flag
    for (int sig : {SIGINT, SIGTERM}) install(sig, g_signal != 0 ? SIG_DFL : onStopSignal, SA_RESETHAND | SA_RESTART);
}

bool StopSignalScope::requested() { return g_signal != 0; }

int StopSignalScope::exitCode() { return 128 + (g_signal != 0 ? static_cast<int>(g_signal) : SIGINT); }

const char* StopSignalScope::cause() { return g_signal == SIGTERM ? "SIGTERM" : "Ctrl+C"; }

} // namespace quantscope::cli
