// Commands and status between the control service and the training thread.
#include "monitoring/control_board.h"

#include <sstream>

#include <utility>

namespace tandem::monitoring {

std::string learning_rate_refusal(double learning_rate) {
  if (learning_rate > 0 && learning_rate <= 1) return "";  // NaN fails both comparisons
  std::ostringstream text;
  text.precision(17);  // 1.0000001 must not read as 1
  text << "learning_rate = " << learning_rate
       << ": it must be a number in (0, 1], as train.lr; nothing was changed";
  return text.str();
}

CommandOutcome CommandOutcome::failure(Code code, std::string message) {
  CommandOutcome out;
  out.code = code;
  out.message = std::move(message);
  out.changed = false;
  return out;
}

Command::Command(CommandKind kind, double learning_rate)
    : kind_(kind), learning_rate_(learning_rate), future_(promise_.get_future().share()) {}

Command::~Command() {
  // Whoever waits must hear something: a dropped command was never applied.
  answer(CommandOutcome::failure(CommandOutcome::Code::kUnavailable,
                                 "the job dropped it without applying it (the run ended, or "
                                 "failed, first)"));
}

void Command::answer(CommandOutcome outcome) {
  std::lock_guard lock(mutex_);
  if (answered_) return;
  answered_ = true;
  promise_.set_value(std::move(outcome));
}

std::shared_future<CommandOutcome> ControlBoard::submit(CommandKind kind, double learning_rate) {
  auto command = std::make_shared<Command>(kind, learning_rate);
  std::shared_future<CommandOutcome> answer = command->answer_future();
  std::lock_guard lock(mutex_);
  if (closed_)
    command->answer(CommandOutcome::failure(CommandOutcome::Code::kUnavailable, closed_why_));
  else
    queue_.push_back(std::move(command));
  return answer;
}

JobStatus ControlBoard::status() const {
  std::lock_guard lock(mutex_);
  return status_;
}

bool ControlBoard::wait_for_status(uint64_t seen, std::chrono::milliseconds timeout,
                                   JobStatus* out) const {
  std::unique_lock lock(mutex_);
  published_.wait_for(lock, timeout, [&] { return status_.version > seen || closed_; });
  if (status_.version <= seen) return false;
  *out = status_;
  return true;
}

bool ControlBoard::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

namespace {
// Pause and Resume set one state: both in one boundary would leave it to their order.
int kind_class(CommandKind kind) {
  return kind == CommandKind::kResume ? static_cast<int>(CommandKind::kPause)
                                      : static_cast<int>(kind);
}
}  // namespace

std::vector<std::shared_ptr<Command>> ControlBoard::take() {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Command>> out;
  unsigned taken = 0;  // a bit per kind class
  while (!queue_.empty()) {
    const unsigned bit = 1u << kind_class(queue_.front()->kind());
    if (taken & bit) break;
    taken |= bit;
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return out;
}

void ControlBoard::publish(JobStatus status) {
  {
    std::lock_guard lock(mutex_);
    status.version = status_.version + 1;
    status_ = std::move(status);
  }
  published_.notify_all();
}

void ControlBoard::close(const std::string& why) {
  std::deque<std::shared_ptr<Command>> dropped;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    closed_why_ = why;
    dropped.swap(queue_);
  }
  for (auto& command : dropped)
    command->answer(CommandOutcome::failure(CommandOutcome::Code::kUnavailable, why));
  published_.notify_all();
}

}  // namespace tandem::monitoring
