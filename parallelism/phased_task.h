// A computation that pauses while its communication is in flight. The body starts an operation
// and `co_await until_done(handle);`: if the operation has not completed, the task pauses, and an
// executor runs other work (another task's computation) until it has. Two tasks run interleaved
// this way overlap each one's communication with the other's compute (DeepSeek-V3's overlap of a
// forward and a backward chunk). Tasks that run together must issue their collectives on
// different communicators: which one gets to issue next depends on timing.
#pragma once

#include <chrono>
#include <coroutine>
#include <exception>
#include <thread>
#include <utility>

#include "comm/communicator.h"

namespace tandem::parallel {

class PhasedTask {
 public:
  struct promise_type {
    std::exception_ptr error;
    comm::CommHandle* awaiting = nullptr;  // the operation the task paused on
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
  // Not done, and not waiting for an operation that is still in flight (tests it, which also
  // lets the backend progress it).
  bool runnable() {
    if (done()) return false;
    comm::CommHandle* op = handle_.promise().awaiting;
    return op == nullptr || op->test();
  }
  // Blocks until the awaited operation completes; returns the seconds spent blocked.
  double block() {
    if (done() || handle_.promise().awaiting == nullptr) return 0;
    const auto start = std::chrono::steady_clock::now();
    handle_.promise().awaiting->wait();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  // Runs to the next pause (or the end); rethrows what the body threw.
  void resume() {
    if (done()) return;
    handle_.promise().awaiting = nullptr;
    handle_.resume();
    if (handle_.done() && handle_.promise().error)
      std::rethrow_exception(std::exchange(handle_.promise().error, nullptr));
  }
  // Runs alone to the end; returns the seconds spent blocked on its operations.
  double run_to_end() {
    double blocked = 0;
    while (!done()) {
      blocked += block();
      resume();
    }
    return blocked;
  }

 private:
  explicit PhasedTask(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  std::coroutine_handle<promise_type> handle_;
};

// `co_await until_done(handle)`: pauses unless the operation has already completed.
struct until_done {
  comm::CommHandle& op;
  bool await_ready() { return op.test(); }
  void await_suspend(std::coroutine_handle<PhasedTask::promise_type> task) {
    task.promise().awaiting = &op;
  }
  void await_resume() {}
};

// Runs two tasks to the end, always running whichever can compute. When both wait it polls both
// operations rather than blocking on one: a peer may need this rank's other task to move first.
// Past half of timeout_s it blocks on one of the operations, whose watchdog then reports what
// never arrived after its own full timeout (so a hang stops within 1.5 × timeout_s). Returns the
// seconds spent waiting (communication nothing hid).
inline double run_interleaved(PhasedTask& a, PhasedTask& b, double timeout_s = 300) {
  using Clock = std::chrono::steady_clock;
  double blocked = 0;
  while (!a.done() || !b.done()) {
    bool ran = false;
    for (PhasedTask* task : {&a, &b}) {
      if (task->runnable()) {
        task->resume();
        ran = true;
      }
    }
    if (ran) continue;
    const auto start = Clock::now();
    auto waited = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
    while (!a.runnable() && !b.runnable() && waited() < timeout_s / 2)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    if (!a.runnable() && !b.runnable()) (a.done() ? b : a).block();
    blocked += waited();
  }
  return blocked;
}

}  // namespace tandem::parallel
