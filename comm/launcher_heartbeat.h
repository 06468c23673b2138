// The rank's side of tandem-launch's heartbeat: a thread that writes one byte every interval to
// the socket the launcher handed this process (TANDEM_HEARTBEAT_FD), so that the launcher can
// tell a rank that is slow (still beating) from one that is frozen (stopped, or stuck whole in
// the kernel: no beat for its heartbeat timeout) and from one that is gone (end of file). It
// beats whatever the training thread does: a rank stuck in a collective is for the watchdog to
// report (comm.timeout_s, which is shorter), not for the launcher.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "comm/bootstrap.h"
#include "runtime/core/owned_fd.h"

namespace tandem::comm {

class LauncherHeartbeat {
 public:
  // Starts beating when tandem-launch gave this process a heartbeat socket (launch.heartbeat_fd);
  // null otherwise. A variable naming a descriptor that is not an open socket is refused: it was
  // inherited by a process tandem-launch did not start.
  static std::unique_ptr<LauncherHeartbeat> start_if_launched(const LaunchInfo& launch);
  // Takes the socket; the first beat goes at once.
  LauncherHeartbeat(OwnedFd socket, int interval_ms);
  // Stops the thread and closes the socket: the launcher reads end of file, this rank is exiting.
  ~LauncherHeartbeat();
  LauncherHeartbeat(const LauncherHeartbeat&) = delete;
  LauncherHeartbeat& operator=(const LauncherHeartbeat&) = delete;

 private:
  void run();
  OwnedFd socket_;
  int interval_ms_;
  std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tandem::comm
