// Log lines carry "[rank R]" when the job has more than one rank (unless a launcher that
// prefixes every line itself, tandem-launch, says so with TANDEM_OUTPUT_PREFIXED); info goes to
// stdout, the rest to stderr. One write per line keeps lines whole when ranks share a terminal.
#include "runtime/core/logging.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "runtime/core/runtime_context.h"

namespace tandem {

void log_line(LogLevel level, const std::string& message) {
  static std::mutex mutex;
  std::string line;
  static const bool launcher_prefixes = std::getenv("TANDEM_OUTPUT_PREFIXED") != nullptr;
  if (runtime().world_size > 1 && !launcher_prefixes)
    line = detail::concat("[rank ", runtime().rank, "] ");
  if (level == LogLevel::kWarn) line += "warning: ";
  if (level == LogLevel::kError) line += "error: ";
  line += message;
  line += '\n';
  std::lock_guard lock(mutex);
  FILE* stream = level == LogLevel::kInfo ? stdout : stderr;
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fflush(stream);
}

}  // namespace tandem
