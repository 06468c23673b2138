// Closing an owned file descriptor.
#include "runtime/core/owned_fd.h"

#include <unistd.h>

namespace tandem {

void OwnedFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace tandem
