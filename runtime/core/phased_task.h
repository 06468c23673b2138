// A computation that pauses while something it started is in flight. The body starts an operation
// and `co_await until_done{op};`: if the operation has not completed, the task pauses, and whoever
// runs it runs other work (another task's computation) until it has. Two tasks run interleaved
// this way overlap each one's communication with the other's compute (DeepSeek-V3's overlap of a
// forward and a backward chunk). A task may `co_await` another task: a part of the walk written as
// its own task (an MoE block's sub-stages inside a chunk's walk) then runs as part of the outer
// one and pauses it where it pauses. Tasks that run together must issue their collectives on
// different communicators: which one gets to issue next depends on timing.
#pragma once

#include <chrono>
#include <coroutine>
#include <exception>
#include <thread>
#include <utility>

namespace tandem {

// An operation that completes on its own once started (a message, a collective). The operations
// come from the layer that starts them (comm/); a task only asks whether they are done.
class InFlight {
 public:
  // true once complete; never blocks (it may let the operation progress); throws its failure.
  virtual bool test() = 0;
  virtual void wait() = 0;  // blocks until complete, or throws the failure
  // The runner tells the operation how long it sat blocked on it with nothing else to run
  // (communication that nothing hid), so that an operation that keeps statistics can book it.
  virtual void add_exposed_seconds(double) {}

 protected:
  ~InFlight() = default;
};

// What a step that moves nothing returns: complete from the start.
class Completed final : public InFlight {
 public:
  bool test() override { return true; }
  void wait() override {}
};

class PhasedTask {
 public:
  struct promise_type {
    std::exception_ptr error;
    InFlight* awaiting = nullptr;               // the operation the task paused on
    std::coroutine_handle<promise_type> inner;  // the task it awaits, paused inside it
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
    InFlight* op = innermost().awaiting;
    return op == nullptr || op->test();
  }
  // The operation the task is paused on (null when done or not waiting); it stays so until the
  // task resumes, even once complete.
  InFlight* awaited() const { return done() ? nullptr : innermost().awaiting; }
  // Blocks until the awaited operation completes; returns the seconds spent blocked, which are
  // also booked to the operation.
  double block() {
    InFlight* op = awaited();
    if (op == nullptr) return 0;
    const auto start = std::chrono::steady_clock::now();
    op->wait();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    op->add_exposed_seconds(seconds);
    return seconds;
  }
  // Runs to the next pause (or the end); rethrows what the body threw.
  void resume() {
    if (done()) return;
    resume_innermost(handle_);
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

  // `co_await task;` in another task's body runs it there to its end, pausing the outer task where
  // it pauses, and rethrows what it threw.
  struct Awaiter {
    PhasedTask& task;
    bool await_ready() {
      task.handle_.resume();  // to its first pause
      return task.handle_.done();
    }
    void await_suspend(std::coroutine_handle<promise_type> outer) {
      outer.promise().inner = task.handle_;
    }
    void await_resume() {
      if (std::exception_ptr error = std::exchange(task.handle_.promise().error, nullptr))
        std::rethrow_exception(error);
    }
  };
  Awaiter operator co_await() && { return Awaiter{*this}; }

 private:
  explicit PhasedTask(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  // The task at the bottom of the chain of awaited tasks: the one that paused on an operation.
  promise_type& innermost() const {
    std::coroutine_handle<promise_type> task = handle_;
    while (task.promise().inner) task = task.promise().inner;
    return task.promise();
  }
  static void resume_innermost(std::coroutine_handle<promise_type> task) {
    promise_type& promise = task.promise();
    if (promise.inner) {
      resume_innermost(promise.inner);
      if (!promise.inner.done()) return;
      promise.inner = {};  // finished: this task goes on past its co_await
    }
    promise.awaiting = nullptr;
    task.resume();
  }
  std::coroutine_handle<promise_type> handle_;
};

// `co_await until_done{op}`: pauses unless the operation has already completed.
struct until_done {
  InFlight& op;
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
    InFlight* const awaited[2] = {a.awaited(), b.awaited()};
    const auto start = Clock::now();
    auto waited = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
    while (!a.runnable() && !b.runnable() && waited() < timeout_s / 2)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    double booked = 0;  // by block(), to the operation it blocked on
    if (!a.runnable() && !b.runnable()) booked = (a.done() ? b : a).block();
    const double seconds = waited();
    blocked += seconds;
    // The polled part of the wait is booked to the operation that ended it, half to each when
    // both completed in the same poll.
    InFlight* ended[2] = {};
    int n_ended = 0;
    if (awaited[0] && a.runnable()) ended[n_ended++] = awaited[0];
    if (awaited[1] && b.runnable()) ended[n_ended++] = awaited[1];
    for (int i = 0; i < n_ended; ++i) ended[i]->add_exposed_seconds((seconds - booked) / n_ended);
  }
  return blocked;
}

}  // namespace tandem
