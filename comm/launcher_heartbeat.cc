// The heartbeat thread that tells tandem-launch this rank's process still runs.
#include "comm/launcher_heartbeat.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "runtime/core/errors.h"

namespace tandem::comm {

std::unique_ptr<LauncherHeartbeat> LauncherHeartbeat::start_if_launched(const LaunchInfo& launch) {
  if (launch.heartbeat_fd < 0) return nullptr;
  const int fd = launch.heartbeat_fd;
  struct stat info {};
  const bool socket = ::fstat(fd, &info) == 0 && S_ISSOCK(info.st_mode);
  TANDEM_USER_CHECK(socket, "TANDEM_HEARTBEAT_FD=", fd,
                    " is not an open socket: tandem-launch sets it for the processes it starts "
                    "(and passes that socket); unset TANDEM_HEARTBEAT_FD, "
                    "TANDEM_HEARTBEAT_INTERVAL_MS and TANDEM_HEARTBEAT_TIMEOUT_MS when starting "
                    "tandem-train another way");
  // What this process starts must not keep the launcher believing it alive.
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return std::make_unique<LauncherHeartbeat>(OwnedFd(fd), launch.heartbeat_interval_ms);
}

LauncherHeartbeat::LauncherHeartbeat(OwnedFd socket, int interval_ms)
    : socket_(std::move(socket)), interval_ms_(interval_ms), thread_([this] { run(); }) {}

LauncherHeartbeat::~LauncherHeartbeat() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_one();
  thread_.join();
}

void LauncherHeartbeat::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // Never blocks, never raises SIGPIPE: a launcher that is behind (its socket buffer full)
    // loses nothing by a missed beat, and one that is gone has nobody to tell.
    const char beat = 'b';
    const ssize_t n = ::send(socket_.get(), &beat, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return;
    stop_.wait_for(lock, std::chrono::milliseconds(interval_ms_), [this] { return stopping_; });
  }
}

}  // namespace tandem::comm
