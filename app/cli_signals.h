// Stop signals of the long commands (train, analyze sensitivity/search): SIGINT (Ctrl+C) and
// SIGTERM (kill, timeout(1), a job scheduler's stop) both ask the work to stop at its next check
// (a batch, an evaluation), so the command prints what it has, writes no half file and exits with
// 128 + the signal's number (130, 143), as a shell reports a process the signal ended.
// The first signal of either kind is caught; the default action comes back after it
// (SA_RESETHAND), so a second one ends the process at once (e.g. during a long dataset load).
#pragma once

namespace quantscope {
class StopToken;
}

namespace quantscope::cli {

// Catches SIGINT and SIGTERM while in scope. token, when given, has requestStop() called from the
// handler (the trainer polls it); the flag below is set either way. A second signal in scope takes
// the default action (a second Ctrl+C kills). When the scope ends, the command's work is done and
// its files written: a first signal from then until the process exits is absorbed, so that it
// does not kill the process mid-exit (cli_soak.py saw "killed by SIGINT" for a signal that came as
// a short run returned); a second one takes the default action. One scope at a time.
class StopSignalScope {
public:
    explicit StopSignalScope(StopToken* token = nullptr);
    ~StopSignalScope();
    StopSignalScope(const StopSignalScope&) = delete;
    StopSignalScope& operator=(const StopSignalScope&) = delete;

    // Whether a stop signal came since the scope began (async-signal-safe to read anywhere).
    static bool requested();
    // 128 + the signal's number (130 for SIGINT, 143 for SIGTERM); 130 when none came.
    static int exitCode();
    // How the stop came, for messages: "Ctrl+C" or "SIGTERM".
    static const char* cause();
};

} // namespace quantscope::cli
