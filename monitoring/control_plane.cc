// Starting and stopping rank 0's control plane.
#include "monitoring/control_plane.h"

#include "monitoring/control_token.h"
#include "runtime/core/logging.h"

namespace tandem::monitoring {

ControlPlane::ControlPlane(const ControlConfig& config, bool checkpoints_enabled,
                           std::shared_ptr<ControlBoard> board)
    : board_(board ? std::move(board) : std::make_shared<ControlBoard>()) {
  const int port = static_cast<int>(config.port);
  const ControlToken token = resolve_control_token(config.token_file, port);
  ControlServerOptions options;
  options.bind = config.bind;
  options.port = port;
  options.token = token.value;
  options.checkpoints_enabled = checkpoints_enabled;
  server_ = std::make_unique<ControlServer>(options, *board_);
  // Written only once the port is ours: a job that could not listen leaves another job's token
  // file alone.
  if (!token.generated_path.empty()) write_generated_token(token);
  // tandemctl finds a generated token by itself (default_token_path of the port it dials).
  std::string hint = "tandemctl --addr " + server_->address();
  if (!config.token_file.empty())
    hint += " --token-file " + config.token_file;
  else if (token.generated_path.empty())
    hint = "TANDEM_CONTROL_TOKEN=... " + hint;
  log_info("control: serving tandem.control.v1.Control on ", server_->address(), "; token ",
           token.source, "; try: ", hint, " status");
}

ControlPlane::~ControlPlane() {
  board_->close("the run has ended");
  server_.reset();
}

}  // namespace tandem::monitoring
