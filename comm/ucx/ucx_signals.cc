// UCX's load-time signal handlers, found by the library their function lives in and removed with
// UCS's own call, which restores the handler that was there before.
#include "comm/ucx/ucx_signals.h"

#include <dlfcn.h>
#include <ucs/config/global_opts.h>
#include <ucs/debug/debug.h>

#include <csignal>
#include <cstring>

namespace tandem::comm {

namespace {

bool handled_by_ucs(int signal_number) {
  struct sigaction current {};
  if (sigaction(signal_number, nullptr, &current) != 0) return false;
  void* handler = (current.sa_flags & SA_SIGINFO) ? reinterpret_cast<void*>(current.sa_sigaction)
                                                  : reinterpret_cast<void*>(current.sa_handler);
  if (handler == reinterpret_cast<void*>(SIG_DFL) || handler == reinterpret_cast<void*>(SIG_IGN))
    return false;
  Dl_info library{};
  return dladdr(handler, &library) != 0 && library.dli_fname &&
         std::strstr(library.dli_fname, "libucs") != nullptr;
}

}  // namespace

void return_signals_from_ucx() {
  // Only signals UCX itself holds: UCS warns when asked to release one it never installed.
  if (ucs_global_opts.debug_signo > 0 && handled_by_ucs(ucs_global_opts.debug_signo))
    ucs_debug_disable_signal(ucs_global_opts.debug_signo);
  for (unsigned i = 0; i < ucs_global_opts.error_signals.count; ++i) {
    const int signal_number = ucs_global_opts.error_signals.signals[i];
    if (handled_by_ucs(signal_number)) ucs_debug_disable_signal(signal_number);
  }
  ucs_global_opts_set_value("HANDLE_ERRORS", "none");
  ucs_global_opts_set_value("DEBUG_SIGNO", "0");
}

}  // namespace tandem::comm
