// Starting, watching and stopping one attempt's local ranks.
#include "launcher/local_ranks.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

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
  std::string partial;  // the start of a line not yet ended
  bool exited = false;
};

// In the child, between fork and exec: only async-signal-safe calls until execvp.
[[noreturn]] void exec_rank(const RankSpec& spec, int output_fd, pid_t launcher) {
  ::setpgid(0, 0);
  // The rank dies with the launcher, even when the launcher is killed with SIGKILL (what the
  // rank started is ended by the guardian).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != launcher) ::_exit(127);  // the launcher died before the line above
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(s, SIG_DFL);
  ::dup2(output_fd, STDOUT_FILENO);
  ::dup2(output_fd, STDERR_FILENO);
  for (const auto& [key, value] : spec.env) ::setenv(key.c_str(), value.c_str(), 1);
  std::vector<char*> argv;
  for (const std::string& arg : spec.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());  // the program was resolved to a path before the first attempt
  const int error = errno;
  std::fprintf(stderr, "tandem-launch: cannot run '%s': %s\n", argv[0], std::strerror(error));
  ::_exit(127);
}

// A process outside the ranks' groups that outlives the launcher: it learns each rank's process
// group through a pipe only the launcher writes, and when that pipe closes — the attempt ended,
// or the launcher died, even by SIGKILL — it kills every group, so nothing a rank started (a
// wrapper script's child, say) is left holding a GPU.
class Guardian {
 public:
  Guardian() {
    int fds[2];
    TANDEM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
    OwnedFd read_end(fds[0]);
    write_end_ = OwnedFd(fds[1]);
    pid_ = ::fork();
    TANDEM_CHECK(pid_ >= 0, "fork: ", std::strerror(errno));
    if (pid_ != 0) return;
    write_end_.reset();
    // A terminal's Ctrl-C reaches the launcher's whole group; the guardian must stay.
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(s, SIG_IGN);
    std::vector<pid_t> groups;
    pid_t group;
    while (true) {
      const ssize_t n = ::read(read_end.get(), &group, sizeof group);
      if (n < 0 && errno == EINTR) continue;
      if (n != sizeof group) break;
      groups.push_back(group);
    }
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

void start(Running& r, pid_t launcher, Guardian& guardian) {
  int fds[2];
  TANDEM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
  OwnedFd read_end(fds[0]), write_end(fds[1]);
  const pid_t pid = ::fork();
  TANDEM_CHECK(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0) exec_rank(*r.spec, write_end.get(), launcher);
  ::setpgid(pid, pid);  // as the child does: whichever runs first, the group exists
  guardian.watch(pid);
  r.pid = pid;
  r.output = std::move(read_end);
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
  return signal ? "killed by " + signal_name(signal) : "exit " + std::to_string(exit_code);
}

AttemptResult run_attempt(const std::vector<RankSpec>& ranks, std::chrono::milliseconds grace,
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
  // The forks come before the writer's thread exists: a child of a threaded process could find
  // the allocator locked by a thread that no longer exists in it.
  Guardian guardian;
  for (Running& r : running) start(r, launcher, guardian);
  OutputWriter out;
  AttemptResult result;
  std::optional<Clock::time_point> stopping_since, all_exited_since;
  bool killed = false;
  size_t alive = running.size();
  int seen_stops = 0;
  auto begin_stop = [&](int signal) {
    if (stopping_since) return;
    stopping_since = Clock::now();
    signal_all(running, signal);
  };
  while (true) {
    std::vector<pollfd> fds;
    std::vector<Running*> of_fd;
    for (Running& r : running)
      if (r.output) fds.push_back({r.output.get(), POLLIN, 0}), of_fd.push_back(&r);
    if (alive == 0) {
      if (!all_exited_since) all_exited_since = Clock::now();
      if (fds.empty() || Clock::now() - *all_exited_since > kDrainAfterExit) break;
    }
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 50);
    else
      ::usleep(20000);
    // Output first, so that a rank's last words are printed before its exit is handled.
    for (size_t i = 0; i < fds.size(); ++i)
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !read_output(*of_fd[i], out)) {
        emit_lines(*of_fd[i], out, true, 0);
        of_fd[i]->output.reset();
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
      --alive;
      RankExit exit{r->spec->rank};
      if (WIFEXITED(status)) exit.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) exit.signal = WTERMSIG(status);
      exit.stopped_by_launcher = stopping_since.has_value();
      exit.seconds = seconds_since(begin);
      result.exits.push_back(exit);
      if ((exit.exit_code != 0 || exit.signal != 0) && !result.first_failure &&
          !exit.stopped_by_launcher) {
        result.first_failure = exit;
        result.detect_seconds = exit.seconds;
      }
    }
    if (result.first_failure && alive > 0) begin_stop(SIGTERM);
    if (stop.count > seen_stops) {
      seen_stops = stop.count;
      result.stop_signal = stop.signal;
      if (seen_stops > 1 && !killed) signal_all(running, SIGKILL), killed = true;  // asked twice
      begin_stop(stop.signal);  // as received: SIGINT stays SIGINT
    }
    if (stopping_since && !killed && Clock::now() - *stopping_since >= grace) {
      signal_all(running, SIGKILL);
      killed = true;
    }
  }
  if (stopping_since) result.stop_seconds = seconds_since(*stopping_since);
  return result;
}

}  // namespace tandem::launcher
