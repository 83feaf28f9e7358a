#include "cli_signals.h"

#include "train/events.h"

#include <csignal>

namespace quantscope::cli {

namespace {
volatile std::sig_atomic_t g_signal = 0; // the signal that came, 0 for none
StopToken* g_token = nullptr;            // set before the handlers are installed, cleared after they are removed

extern "C" void onStopSignal(int sig)
{
    g_signal = sig;
    if (g_token) g_token->requestStop(); // an atomic store: lock-free, so safe in a handler
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
    for (int sig : {SIGINT, SIGTERM}) install(sig, SIG_DFL, 0);
    g_token = nullptr;
}

bool StopSignalScope::requested() { return g_signal != 0; }

int StopSignalScope::exitCode() { return 128 + (g_signal != 0 ? static_cast<int>(g_signal) : SIGINT); }

const char* StopSignalScope::cause() { return g_signal == SIGTERM ? "SIGTERM" : "Ctrl+C"; }

} // namespace quantscope::cli
