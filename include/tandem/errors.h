// The exceptions tandem throws, part of the public API: every failure is a tandem::Error whose
// message says what went wrong and what to do about it.
#pragma once

#include <stdexcept>

namespace tandem {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An error in what the user gave (configuration, files, arguments) found once the job is up:
// tandem-train exits with the usage code (2) for it, so that a launcher does not restart the job.
class UsageError : public Error {
 public:
  using Error::Error;
};

}  // namespace tandem
