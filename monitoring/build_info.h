// Which build this is: the CMake project version and the git commit the build was configured at
// (monitoring/CMakeLists.txt reads it at configure time, so a later commit shows only after the
// next configure). tandem_build_info carries both.
#pragma once

#include <string_view>

namespace tandem::monitoring {

std::string_view build_version();  // "0.1.0"
std::string_view build_commit();   // "4f37686a1b2c", or "unknown" outside a git checkout

}  // namespace tandem::monitoring
