// Out-of-line construction of check failures, keeping the macro expansion small at call sites.
#include "runtime/core/errors.h"

#include <cstring>

namespace tandem::detail {

void throw_error(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(concat(base ? base + 1 : file, ":", line, ": ", message));
}

}  // namespace tandem::detail
