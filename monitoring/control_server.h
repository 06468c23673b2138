// The gRPC control service (monitoring/proto/control.proto) that rank 0 of a job serves: reads
// answer from the ControlBoard's last status; commands are checked (token, values), queued on the
// board, and answered once the training thread has applied them at a step boundary. gRPC stays
// behind this header: the rest of tandem sees a server that starts, and stops when destroyed.
#pragma once

#include <memory>
#include <string>

#include "monitoring/control_board.h"

namespace tandem::monitoring {

struct ControlServerOptions {
  std::string bind = "127.0.0.1";
  int port = 0;
  std::string token;                 // commands must carry "authorization: Bearer <token>"
  bool checkpoints_enabled = false;  // checkpoint.dir is set: Checkpoint can be served
};

class ControlServer {
 public:
  // Listens on bind:port (never sharing the port with another process: SO_REUSEPORT is off).
  // Throws a UsageError naming the address, and what to change, when it cannot.
  ControlServer(const ControlServerOptions& options, ControlBoard& board);
  // Stops listening and ends every call: the board should be closed first, so that waiting
  // commands and watchers get their last answer; calls still running after 2 s are cancelled.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  // "127.0.0.1:29600", as a client dials it.
  const std::string& address() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::monitoring
