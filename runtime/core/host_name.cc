// host_name: gethostname(2) into a string.
#include "runtime/core/host_name.h"

#include <unistd.h>

#include <climits>

namespace tandem {

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

}  // namespace tandem
