// Gives the process's signals back after UCX loaded: libucs installs handlers for SIGHUP (its
// "switch to debug logging" signal, UCX_DEBUG_SIGNO) and for SIGSEGV, SIGBUS, SIGILL and SIGFPE
// (its backtrace printer) from a load-time constructor, before main. A hung-up terminal then no
// longer stops the job, and crashes are reported by UCX instead of by tandem's launcher.
#pragma once

namespace tandem::comm {

// Restores, for each signal whose handler is UCX's, the disposition it had before UCX loaded, and
// tells UCX not to print backtraces or freeze on its own fatal errors. Idempotent; handlers the
// program installed itself are left alone.
void return_signals_from_ucx();

}  // namespace tandem::comm
