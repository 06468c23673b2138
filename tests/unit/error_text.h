// The message of the tandem::Error a piece of code throws, for asserting on error texts.
#pragma once

#include <functional>
#include <string>

#include "runtime/core/errors.h"

namespace tandem::testing {

inline std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace tandem::testing
