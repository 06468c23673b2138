// Logging to stderr/stdout with a rank prefix, so interleaved output of many ranks stays readable.
#pragma once

#include <string>

#include "runtime/core/errors.h"

namespace tandem {

enum class LogLevel { kInfo, kWarn, kError };

void log_line(LogLevel level, const std::string& message);

template <class... Args>
void log_info(Args&&... args) {
  log_line(LogLevel::kInfo, detail::concat(std::forward<Args>(args)...));
}
template <class... Args>
void log_warn(Args&&... args) {
  log_line(LogLevel::kWarn, detail::concat(std::forward<Args>(args)...));
}
template <class... Args>
void log_error(Args&&... args) {
  log_line(LogLevel::kError, detail::concat(std::forward<Args>(args)...));
}

}  // namespace tandem
