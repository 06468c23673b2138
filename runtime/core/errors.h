// Errors: one exception type and one family of check macros that name the file and line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "tandem/errors.h"

namespace tandem {

// Error and UsageError (tandem/errors.h, public): every failure the runtime reports is a
// tandem::Error whose message already says what went wrong and what to do about it; callers at
// the top (tools, tests, an embedding program) print what() and exit non-zero.

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace tandem

// TANDEM_FAIL(parts...) throws an Error "file:line: parts..."; TANDEM_CHECK throws it when cond is
// false. The message parts are only evaluated on failure.
#define TANDEM_FAIL(...) \
  ::tandem::detail::throw_error(__FILE__, __LINE__, ::tandem::detail::concat(__VA_ARGS__))
#define TANDEM_CHECK(cond, ...)                                \
  do {                                                         \
    if (!(cond)) [[unlikely]] {                                \
      TANDEM_FAIL("check failed: " #cond ": ", ##__VA_ARGS__); \
    }                                                          \
  } while (0)
// A user-facing error (bad config, bad file): the message stands alone, no file:line noise.
#define TANDEM_USER_FAIL(...) throw ::tandem::Error(::tandem::detail::concat(__VA_ARGS__))
// The same for a configuration refused once the job is up: a UsageError, exit 2, no restart.
#define TANDEM_CONFIG_CHECK(cond, ...)                                   \
  do {                                                                   \
    if (!(cond)) [[unlikely]]                                            \
      throw ::tandem::UsageError(::tandem::detail::concat(__VA_ARGS__)); \
  } while (0)
#define TANDEM_USER_CHECK(cond, ...)                                \
  do {                                                              \
    if (!(cond)) [[unlikely]]                                       \
      throw ::tandem::Error(::tandem::detail::concat(__VA_ARGS__)); \
  } while (0)
