// The mailbox between the control service's gRPC threads and the training thread: commands that
// the service queues and the training thread applies, and answers, at a step boundary; and the
// job's status, which the training thread publishes after every step and the service reads.
// Nothing here knows gRPC or the network: the trainer depends on this file only, and the gRPC
// threads never touch the model or a communicator (MPI runs FUNNELED: one thread calls it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tandem::monitoring {

enum class CommandKind { kPause, kResume, kCheckpoint, kSetLearningRate, kStop };

// What the training thread answers a command with.
struct CommandOutcome {
  enum class Code { kOk, kFailedPrecondition, kAborted, kUnavailable };
  Code code = Code::kOk;
  std::string message;  // why, when not kOk
  // Pause, Resume: the boundary is after this step; Checkpoint, Stop: the checkpoint's (the last
  // trained) step; SetLearningRate: the first step trained at the new rate.
  int64_t step = 0;
  bool changed = true;                // Pause, Resume: false when already in that state
  std::string path;                   // Checkpoint, Stop: the checkpoint directory
  double previous_learning_rate = 0;  // SetLearningRate: what that step would have used

  static CommandOutcome failure(Code code, std::string message);
};

// One queued command, owned by the board and then by the training thread; whoever asked holds
// only its answer (a future). It is answered exactly once: by the training thread, or, when the
// last owner drops it unanswered (the run ended, or failed, before applying it), kUnavailable.
class Command {
 public:
  Command(CommandKind kind, double learning_rate);
  ~Command();
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;
  CommandKind kind() const { return kind_; }
  double learning_rate() const { return learning_rate_; }  // kSetLearningRate's value
  // The first answer counts; later ones are ignored.
  void answer(CommandOutcome outcome);
  std::shared_future<CommandOutcome> answer_future() const { return future_; }

 private:
  const CommandKind kind_;
  const double learning_rate_;
  std::mutex mutex_;
  bool answered_ = false;
  std::promise<CommandOutcome> promise_;
  std::shared_future<CommandOutcome> future_;
};

// The job as the training thread last published it (control.proto's Status).
struct JobStatus {
  enum class State { kStarting, kRunning, kPaused, kStopping, kFinished };
  struct Grid {
    int world_size = 1, pp = 1, dp = 1, ep = 1;
    bool zero1 = false;
    std::string schedule;
  };
  int64_t step = 0, total_steps = 0;
  double loss = 0, learning_rate = 0, grad_norm = 0;
  double tokens_per_second = 0, step_seconds = 0, eta_seconds = 0;
  State state = State::kStarting;
  Grid grid;
  // Every rank's last training step, in rank order: its compute, its waits on peers and the
  // straggler detector's verdict (runtime/train/straggler_detector.h).
  struct RankHealth {
    double compute_seconds = 0, all_to_all_wait_seconds = 0, pipeline_wait_seconds = 0,
           sync_wait_seconds = 0;
    double relative_speed = 1;  // 0..1
    bool straggler = false;
    std::string host;  // "" where the job's hosts are not known (an MPI launch)
    double step_seconds() const {
      return compute_seconds + all_to_all_wait_seconds + pipeline_wait_seconds + sync_wait_seconds;
    }
  };
  std::vector<RankHealth> ranks;
  // When every rank last contributed (the last step boundary's agreement): a status's age.
  std::chrono::steady_clock::time_point ranks_heard_at{};
  int64_t last_checkpoint_step = 0;
  std::string last_checkpoint_path;
  int64_t learning_rate_changed_at_step = 0;  // 0: the configured schedule
  bool checkpoint_in_progress = false;        // a checkpoint is being written in the background
  uint64_t version = 0;                       // set by publish: one more each time
};

// Why SetLearningRate refuses `learning_rate` ("" when it takes it): the range train.lr accepts.
std::string learning_rate_refusal(double learning_rate);
// Why Checkpoint is refused in a run that writes no checkpoints.
inline constexpr const char* kCheckpointsOffRefusal =
    "this run writes no checkpoints (checkpoint.dir is not set); start it with --set "
    "checkpoint.dir=DIR to checkpoint on request";

class ControlBoard {
 public:
  // gRPC threads. Queues a command for the next step boundary and returns its answer to come;
  // after close() it is answered kUnavailable at once.
  std::shared_future<CommandOutcome> submit(CommandKind kind, double learning_rate = 0);
  JobStatus status() const;
  // Waits up to `timeout` for a status newer than version `seen`: true (and *out set) when one
  // was published; false on timeout or once the board is closed with nothing newer.
  bool wait_for_status(uint64_t seen, std::chrono::milliseconds timeout, JobStatus* out) const;
  bool closed() const;

  // The training thread. The queued commands in order, up to the first one of a kind already
  // taken (Pause and Resume count as one kind): each taken command is applied at this boundary
  // exactly as asked, and a second of its kind waits for the next one.
  std::vector<std::shared_ptr<Command>> take();
  void publish(JobStatus status);
  // The run is over: queued commands are answered kUnavailable with `why`, and watchers end after
  // the last status.
  void close(const std::string& why);

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable published_;
  std::deque<std::shared_ptr<Command>> queue_;
  JobStatus status_;
  bool closed_ = false;
  std::string closed_why_;
};

}  // namespace tandem::monitoring
