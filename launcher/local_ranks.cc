// Starting, watching and stopping one attempt's local ranks.
#include "launcher/local_ranks.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "comm/faults.h"
#include "launcher/stack_capture.h"
#include "runtime/core/errors.h"
#include "runtime/core/owned_fd.h"

namespace tandem::launcher {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A line longer than this is printed in pieces (each with the prefix), so a rank that never
// ends its line costs bounded memory.
constexpr size_t kMaxLineBytes = 64 * 1024;
// What may wait for a slow stdout reader before lines are dropped (and counted): the launcher's
// loop must never block on its own output, or it would stop watching the ranks.
constexpr size_t kMaxQueuedBytes = 64 << 20;
// How long output is still read once every rank has exited (a helper that escaped the rank's
// process group may hold the pipe open for ever).
constexpr auto kDrainAfterExit = std::chrono::seconds(2);

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a closed terminal or a full disk must not stop the job
    done += static_cast<size_t>(n);
  }
}

// Writes the launcher's stdout from its own thread, from a bounded queue.
class OutputWriter {
 public:
  OutputWriter() : thread_([this] { run(); }) {}
  ~OutputWriter() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    ready_.notify_one();
    thread_.join();
    if (dropped_ > 0)
      std::fprintf(stderr,
                   "tandem-launch: %zu bytes of the ranks' output were dropped: stdout "
                   "was not read fast enough (the per-rank logs have everything)\n",
                   dropped_);
  }
  void push(std::string text) {
    if (text.empty()) return;
    std::lock_guard lock(mutex_);
    if (queued_ + text.size() > kMaxQueuedBytes) {
      dropped_ += text.size();
      return;
    }
    queued_ += text.size();
    queue_.push_back(std::move(text));
    ready_.notify_one();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (true) {
      ready_.wait(lock, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::string text = std::move(queue_.front());
      queue_.pop_front();
      queued_ -= text.size();
      lock.unlock();
      write_all(STDOUT_FILENO, text);
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> queue_;
  size_t queued_ = 0, dropped_ = 0;
  bool done_ = false;
  std::thread thread_;
};

// A rank's process and what the launcher reads of it.
struct Running {
  const RankSpec* spec = nullptr;
  pid_t pid = -1;       // also its process group
  OwnedFd output;       // its stdout and stderr
  OwnedFd log;          // its per-rank log, or none
  OwnedFd beat;         // the launcher's end of its heartbeat socket, until end of file
  std::string partial;  // the start of a line not yet ended
  bool exited = false;
  std::optional<Clock::time_point> last_beat;  // none before its first: not judged
};

// In the child, between fork and exec: only async-signal-safe calls until execve (the launcher
// has threads: the store's event loop, the output writer), so argv and the environment were
// built before the fork.
[[noreturn]] void exec_rank(char* const* argv, char* const* envp, int output_fd, int beat_fd,
                            int metrics_fd, pid_t launcher) {
  ::setpgid(0, 0);
  // The rank dies with the launcher, even when the launcher is killed with SIGKILL (what the
  // rank started is ended by the guardian).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != launcher) ::_exit(127);  // the launcher died before the line above
  // The launcher's gdb may record this rank's stack where Yama lets only ancestors ptrace.
  ::prctl(PR_SET_PTRACER, launcher, 0, 0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(s, SIG_DFL);
  ::dup2(output_fd, STDOUT_FILENO);
  ::dup2(output_fd, STDERR_FILENO);
  // This rank's heartbeat socket, and no other rank's, crosses the exec.
  if (beat_fd >= 0) ::fcntl(beat_fd, F_SETFD, 0);
  if (metrics_fd >= 0) ::fcntl(metrics_fd, F_SETFD, 0);  // and its metrics socket alike
  ::execve(argv[0], argv, envp);  // the program was resolved to a path before the first attempt
  const int error = errno;
  const char* parts[] = {"tandem-launch: cannot run '", argv[0], "': ", std::strerror(error), "\n"};
  for (const char* part : parts) {
    const ssize_t n = ::write(STDERR_FILENO, part, std::strlen(part));
    static_cast<void>(n);  // nothing more to do if even this cannot be said
  }
  ::_exit(127);
}

// The launcher's environment with `overrides` set on top, as execve wants it.
std::vector<std::string> environment_with(const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> out;
  for (char** entry = environ; *entry; ++entry) {
    const std::string text = *entry;
    if (!overrides.contains(text.substr(0, text.find('=')))) out.push_back(text);
  }
  for (const auto& [key, value] : overrides) out.push_back(key + "=" + value);
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// A process outside the ranks' groups that outlives the launcher: it learns each rank's process
// group through a pipe only the launcher writes, and when that pipe closes — the attempt ended,
// or the launcher died, even by SIGKILL — it kills every group, so nothing a rank started (a
// wrapper script's child, say) is left holding a GPU.
class Guardian {
 public:
  explicit Guardian(size_t ranks) {
    // Room for every group before the fork: the child of a threaded process must not allocate.
    std::vector<pid_t> groups;
    groups.reserve(ranks);
    int fds[2];
    TANDEM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
    OwnedFd read_end(fds[0]);
    write_end_ = OwnedFd(fds[1]);
    pid_ = ::fork();
    TANDEM_CHECK(pid_ >= 0, "fork: ", std::strerror(errno));
    if (pid_ != 0) return;
    write_end_.reset();
    // Nothing of the launcher stays open here (the store's listening socket, the ranks' pipes and
    // heartbeat sockets): a port or a heartbeat must not outlive the launcher in its guardian.
    const int keep = read_end.get();
    if (keep > 3) ::close_range(3, keep - 1, 0);
    ::close_range(keep + 1, ~0U, 0);
    // A terminal's Ctrl-C reaches the launcher's whole group; the guardian must stay.
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(s, SIG_IGN);
    pid_t group;
    while (groups.size() < groups.capacity()) {
      const ssize_t n = ::read(read_end.get(), &group, sizeof group);
      if (n < 0 && errno == EINTR) continue;
      if (n != sizeof group) break;
      groups.push_back(group);
    }
    // Every rank's group is known: wait for the end of the attempt (or of the launcher).
    for (ssize_t n; (n = ::read(read_end.get(), &group, sizeof group)) != 0;)
      if (n < 0 && errno != EINTR) break;
    for (pid_t g : groups) ::kill(-g, SIGKILL);
    ::_exit(0);
  }
  ~Guardian() {
    write_end_.reset();
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
  }
  void watch(pid_t group) {
    const ssize_t n = ::write(write_end_.get(), &group, sizeof group);
    static_cast<void>(n);  // a pipe write of 4 bytes is atomic; the guardian reads until EOF
  }
  pid_t pid() const { return pid_; }

 private:
  OwnedFd write_end_;
  pid_t pid_ = -1;
};

void start(Running& r, pid_t launcher, Guardian& guardian, const AttemptOptions& options) {
  int fds[2];
  TANDEM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
  OwnedFd read_end(fds[0]), write_end(fds[1]);
  std::map<std::string, std::string> env = r.spec->env;
  OwnedFd beat_mine, beat_theirs;
  if (options.heartbeat_timeout.count() > 0) {
    // Close-on-exec on both ends: each rank clears it on its own end only (exec_rank), so no
    // rank inherits another's and keeps it beating after that one is gone.
    TANDEM_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0,
                 "socketpair for rank ", r.spec->rank, "'s heartbeat: ", std::strerror(errno));
    beat_mine = OwnedFd(fds[0]);
    beat_theirs = OwnedFd(fds[1]);
    ::fcntl(beat_mine.get(), F_SETFL, O_NONBLOCK);
    env["TANDEM_HEARTBEAT_FD"] = std::to_string(beat_theirs.get());
    env["TANDEM_HEARTBEAT_INTERVAL_MS"] = std::to_string(options.heartbeat_interval.count());
    env["TANDEM_HEARTBEAT_TIMEOUT_MS"] = std::to_string(options.heartbeat_timeout.count());
  }
  // The rank's end of its metrics socket; the launcher's end stays with the node endpoint.
  OwnedFd metrics_theirs;
  if (options.metrics_channel) {
    metrics_theirs = options.metrics_channel(*r.spec);
    env["TANDEM_METRICS_FD"] = std::to_string(metrics_theirs.get());
  }
  std::vector<std::string> args = r.spec->argv, environment = environment_with(env);
  const std::vector<char*> argv = pointers(args), envp = pointers(environment);
  const pid_t pid = ::fork();
  TANDEM_CHECK(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0)
    exec_rank(argv.data(), envp.data(), write_end.get(), beat_theirs ? beat_theirs.get() : -1,
              metrics_theirs ? metrics_theirs.get() : -1, launcher);
  ::setpgid(pid, pid);  // as the child does: whichever runs first, the group exists
  guardian.watch(pid);
  r.pid = pid;
  r.output = std::move(read_end);
  r.beat = std::move(beat_mine);
}

// Reads every beat that has arrived. End of file: the rank closed its socket, it is exiting, and
// its exit will tell how it ended.
void read_beats(Running& r) {
  char buffer[256];
  while (r.beat) {
    const ssize_t n = ::read(r.beat.get(), buffer, sizeof buffer);
    if (n > 0) {
      r.last_beat = Clock::now();
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      r.beat.reset();
    }
  }
}

double silent_seconds(const Running& r) {
  return r.last_beat ? seconds_since(*r.last_beat) : 0;
}

// Prints each whole line with the rank in front (a line past kMaxLineBytes in pieces); with
// `flush`, the rest too (the rank is gone).
void emit_lines(Running& r, OutputWriter& out, bool flush, size_t searched_from) {
  const std::string prefix = "[rank " + std::to_string(r.spec->rank) + "] ";
  std::string text;
  size_t start = 0;
  for (size_t end;
       (end = r.partial.find('\n', std::max(start, searched_from))) != std::string::npos;
       start = end + 1)
    text += prefix + r.partial.substr(start, end + 1 - start);
  r.partial.erase(0, start);
  if ((flush && !r.partial.empty()) || r.partial.size() > kMaxLineBytes) {
    text += prefix + r.partial + "\n";
    r.partial.clear();
  }
  out.push(std::move(text));
}

// Reads what is there; false at end of file.
bool read_output(Running& r, OutputWriter& out) {
  char buffer[16384];
  const ssize_t n = ::read(r.output.get(), buffer, sizeof buffer);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  if (r.log) write_all(r.log.get(), std::string(buffer, static_cast<size_t>(n)));
  const size_t searched_from = r.partial.size();  // no newline before this
  r.partial.append(buffer, static_cast<size_t>(n));
  emit_lines(r, out, false, searched_from);
  return true;
}

// Signals each running rank's whole process group. A rank already reaped is left out: its group
// was emptied before it was reaped, and its id may since belong to another process.
void signal_all(std::vector<Running>& running, int signal) {
  for (Running& r : running) {
    if (r.exited) continue;
    ::kill(-r.pid, signal);
    if (signal != SIGKILL) ::kill(-r.pid, SIGCONT);  // a stopped rank must see it too
  }
}

}  // namespace

std::string signal_name(int signal) {
  const char* name = sigabbrev_np(signal);
  return name ? std::string("SIG") + name : "signal " + std::to_string(signal);
}

std::string RankExit::describe() const {
  if (frozen) {
    char text[64];
    std::snprintf(text, sizeof text, "frozen: no heartbeat for %.1f s", silent_seconds);
    return text;
  }
  return signal ? "killed by " + signal_name(signal) : "exit " + std::to_string(exit_code);
}

AttemptResult run_attempt(const std::vector<RankSpec>& ranks, const AttemptOptions& options,
                          const StopRequest& stop) {
  const pid_t launcher = ::getpid();
  const Clock::time_point begin = Clock::now();
  std::vector<Running> running(ranks.size());
  // Every log is opened before any rank starts: a log that cannot be opened stops nothing.
  for (size_t i = 0; i < ranks.size(); ++i) {
    running[i].spec = &ranks[i];
    const std::string& path = ranks[i].log_path;
    if (path.empty()) continue;
    running[i].log = OwnedFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    TANDEM_USER_CHECK(running[i].log, "--log-dir: cannot open '", path,
                      "': ", std::strerror(errno));
  }
  Guardian guardian(running.size());
  for (Running& r : running) start(r, launcher, guardian, options);
  OutputWriter out;
  AttemptResult result;
  // stop_began: the stop was decided; stopping_since: the first signal went (after the stacks).
  std::optional<Clock::time_point> stop_began, stopping_since, all_exited_since;
  std::chrono::milliseconds grace = options.stop_grace;
  bool killed = false;
  size_t alive = running.size();
  int seen_stops = 0;
  const bool judging = options.heartbeat_timeout.count() > 0;
  Clock::time_point last_remote_check = Clock::now();
  const auto stale_after = std::min(3 * options.heartbeat_interval, options.heartbeat_timeout);
  // The operator's stop: the signal as received (SIGINT stays SIGINT, SIGTERM asks the ranks for
  // a checkpoint).
  auto begin_stop = [&](int signal) {
    if (stopping_since) return;
    stopping_since = stop_began = Clock::now();
    grace = options.stop_grace;
    signal_all(running, signal);
  };
  // A failed attempt: the survivors cannot finish a collective checkpoint without the failed
  // rank, so they get SIGINT, never SIGTERM; a rank whose heartbeat is stale (stopped, or stuck
  // whole — what its peers' collective timeout may have caught first) has its stack recorded
  // before anything is sent to it.
  auto begin_failure_stop = [&] {
    if (stopping_since) return;
    stop_began = Clock::now();
    std::vector<StackRequest> requests;
    std::vector<HungRank> hung;
    for (Running& r : running) {
      if (r.exited || !judging || !r.beat || !r.last_beat) continue;
      read_beats(r);
      if (!r.beat || Clock::now() - *r.last_beat <= stale_after) continue;
      HungRank h;
      h.rank = r.spec->rank;
      h.pid = r.pid;
      h.silent_seconds = silent_seconds(r);
      h.frozen = Clock::now() - *r.last_beat >= options.heartbeat_timeout;
      h.stack_path = r.spec->stack_path;
      hung.push_back(h);
      const std::string why =
          h.frozen
              ? detail::concat("no heartbeat for ", h.silent_seconds,
                               " s, past the heartbeat timeout of ",
                               options.heartbeat_timeout.count() / 1000.0, " s")
              : detail::concat(
                    "its last heartbeat ", h.silent_seconds, " s old (stale: over 3 intervals of ",
                    options.heartbeat_interval.count() / 1000.0,
                    " s) when the attempt was stopped after ",
                    result.first_failure
                        ? detail::concat("rank ", result.first_failure->rank, " failed (",
                                         result.first_failure->describe(), ")")
                        : result.failed_elsewhere);
      requests.push_back(
          {r.pid, r.spec->stack_path,
           detail::concat("tandem-launch: stack of rank ", r.spec->rank, " (pid ", r.pid, ") on ",
                          options.host, ": ", why, "; recorded before ending it")});
    }
    if (!requests.empty()) {
      const Clock::time_point stacks_began = Clock::now();
      const std::vector<std::string> how = record_stacks(requests, options.stack_time_limit);
      result.stack_seconds = seconds_since(stacks_began);
      for (size_t i = 0; i < hung.size(); ++i) {
        hung[i].recorded_by = how[i];
        result.hung.push_back(hung[i]);
      }
    }
    stopping_since = Clock::now();
    grace = options.failure_grace;
    signal_all(running, SIGINT);
  };
  while (true) {
    std::vector<pollfd> fds;
    std::vector<Running*> of_fd;
    for (Running& r : running) {
      if (r.output) fds.push_back({r.output.get(), POLLIN, 0}), of_fd.push_back(&r);
      if (r.beat && !r.exited) fds.push_back({r.beat.get(), POLLIN, 0}), of_fd.push_back(&r);
    }
    if (alive == 0) {
      if (!all_exited_since) all_exited_since = Clock::now();
      bool output_left = false;
      for (Running& r : running) output_left = output_left || r.output;
      if (!output_left || Clock::now() - *all_exited_since > kDrainAfterExit) break;
    }
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 50);
    else
      ::usleep(20000);
    // Output first, so that a rank's last words are printed before its exit is handled.
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Running& r = *of_fd[i];
      if (r.beat && fds[i].fd == r.beat.get()) {
        read_beats(r);
      } else if (r.output && fds[i].fd == r.output.get() && !read_output(r, out)) {
        emit_lines(r, out, true, 0);
        r.output.reset();
      }
    }
    while (alive > 0) {
      // Seen but not yet reaped, so the group id cannot be reused while its rest is killed.
      siginfo_t info{};
      if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) break;
      const pid_t pid = info.si_pid;
      Running* r = nullptr;
      for (Running& candidate : running)
        if (candidate.pid == pid && !candidate.exited) r = &candidate;
      if (!r) {  // the guardian (never before the attempt ends) or an adopted process
        ::waitpid(pid, nullptr, 0);
        continue;
      }
      // What the rank left behind in its group (helpers it started) goes with it.
      ::kill(-pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);
      r->exited = true;
      r->beat.reset();
      --alive;
      RankExit exit{r->spec->rank};
      if (WIFEXITED(status)) exit.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) exit.signal = WTERMSIG(status);
      exit.stopped_by_launcher = stopping_since.has_value();
      exit.seconds = seconds_since(begin);
      result.exits.push_back(exit);
      // Exit 4: stopped on request at a step boundary (after a checkpoint), not a failure.
      if (exit.signal == 0 && exit.exit_code == comm::kStoppedExitCode)
        result.stopped_on_request = true;
      const bool failed =
          exit.signal != 0 || (exit.exit_code != 0 && exit.exit_code != comm::kStoppedExitCode);
      if (failed && !result.first_failure && !exit.stopped_by_launcher) {
        result.first_failure = exit;
        result.detect_seconds = exit.seconds;
      }
    }
    if (result.first_failure && alive > 0) begin_failure_stop();
    // A rank silent past the heartbeat timeout is frozen: the attempt fails on it.
    if (judging && !stopping_since && !result.first_failure) {
      for (Running& r : running) {
        if (r.exited || !r.beat || !r.last_beat) continue;
        read_beats(r);  // what arrived while the launcher was busy elsewhere counts
        if (!r.beat || Clock::now() - *r.last_beat < options.heartbeat_timeout) continue;
        RankExit frozen{r.spec->rank};
        frozen.frozen = true;
        frozen.silent_seconds = silent_seconds(r);
        frozen.seconds = seconds_since(begin);
        result.first_failure = frozen;
        result.detect_seconds = frozen.seconds;
        break;  // the others' stacks are taken with the stop, if they are silent too
      }
      if (result.first_failure) begin_failure_stop();
    }
    // Another node's ranks failed: this node's cannot go on without them.
    if (options.failed_elsewhere && !stopping_since && !result.first_failure && alive > 0 &&
        Clock::now() - last_remote_check >= std::chrono::milliseconds(200)) {
      last_remote_check = Clock::now();
      result.failed_elsewhere = options.failed_elsewhere();
      if (!result.failed_elsewhere.empty()) {
        result.detect_seconds = seconds_since(begin);
        begin_failure_stop();
      }
    }
    if (stop.count > seen_stops) {
      seen_stops = stop.count;
      result.stop_signal = stop.signal;
      if (seen_stops > 1 && !killed) signal_all(running, SIGKILL), killed = true;  // asked twice
      begin_stop(stop.signal);
    }
    if (stopping_since && !killed && Clock::now() - *stopping_since >= grace) {
      signal_all(running, SIGKILL);
      killed = true;
    }
  }
  if (stop_began) result.stop_seconds = seconds_since(*stop_began);
  return result;
}

}  // namespace tandem::launcher
