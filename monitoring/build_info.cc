// The version and commit strings, compiled in from definitions monitoring/CMakeLists.txt sets on
// this file alone (so a new commit recompiles one file, not the library).
#include "monitoring/build_info.h"

#ifndef TANDEM_VERSION
#error "monitoring/CMakeLists.txt defines TANDEM_VERSION for this file"
#endif
#ifndef TANDEM_GIT_COMMIT
#error "monitoring/CMakeLists.txt defines TANDEM_GIT_COMMIT for this file"
#endif

namespace tandem::monitoring {

std::string_view build_version() {
  return TANDEM_VERSION;
}

std::string_view build_commit() {
  return TANDEM_GIT_COMMIT;
}

}  // namespace tandem::monitoring
