// A job's control plane as tandem-train runs it on rank 0: the token (from control.token_file or
// TANDEM_CONTROL_TOKEN, else generated and written where tandemctl looks), the board the trainer
// reads commands from, and the gRPC server on control.bind:control.port. When it goes, the board
// closes first (every waiting command and watcher gets its last answer), then the server stops.
#pragma once

#include <memory>
#include <string>

#include "monitoring/control_board.h"
#include "monitoring/control_server.h"
#include "runtime/core/config.h"

namespace tandem::monitoring {

class ControlPlane {
 public:
  // Starts serving and logs where, how to reach it, and where the token came from (never the
  // token). Throws an Error naming the address or the token file when it cannot. `board`: one
  // that an embedding program also submits to (null: a board of its own).
  ControlPlane(const ControlConfig& config, bool checkpoints_enabled,
               std::shared_ptr<ControlBoard> board = nullptr);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;
  ControlBoard& board() { return *board_; }
  // No more commands: queued ones are answered kUnavailable with `why`.
  void close(const std::string& why) { board_->close(why); }

 private:
  std::shared_ptr<ControlBoard> board_;
  std::unique_ptr<ControlServer> server_;
};

}  // namespace tandem::monitoring
