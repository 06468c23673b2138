// This machine's host name, as every log line, record and metric label names it.
#pragma once

#include <string>

namespace tandem {

// gethostname(2); "unknown" where it fails.
std::string host_name();

}  // namespace tandem
