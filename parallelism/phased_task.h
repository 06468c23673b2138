// A computation that pauses while its communication is in flight. The body starts an operation,
// `co_await in_flight();`, and waits on the operation's handle once resumed; an executor resumes
// two tasks alternately so that each one's communication travels while the other computes
// (DeepSeek-V3's overlap of a forward and a backward chunk), or one task straight through.
#pragma once

#include <coroutine>
#include <exception>
#include <utility>

namespace tandem::parallel {

class PhasedTask {
 public:
  struct promise_type {
    std::exception_ptr error;
    PhasedTask get_return_object() {
      return PhasedTask(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { error = std::current_exception(); }
  };

  PhasedTask() = default;
  PhasedTask(PhasedTask&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  PhasedTask& operator=(PhasedTask&& other) noexcept {
    if (this != &other) {
      if (handle_) handle_.destroy();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  ~PhasedTask() {
    if (handle_) handle_.destroy();
  }

  bool done() const { return !handle_ || handle_.done(); }
  // Runs to the next pause (or the end); rethrows what the body threw.
  void resume() {
    if (done()) return;
    handle_.resume();
    if (handle_.done() && handle_.promise().error)
      std::rethrow_exception(std::exchange(handle_.promise().error, nullptr));
  }
  void run_to_end() {
    while (!done()) resume();
  }

 private:
  explicit PhasedTask(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  std::coroutine_handle<promise_type> handle_;
};

// The pause point: an operation was started and may be in flight.
inline std::suspend_always in_flight() {
  return {};
}

// Alternates between two tasks, one phase of each in turn, until both are done.
inline void run_interleaved(PhasedTask& a, PhasedTask& b) {
  while (!a.done() || !b.done()) {
    a.resume();
    b.resume();
  }
}

}  // namespace tandem::parallel
