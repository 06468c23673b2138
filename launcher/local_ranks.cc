// Starting, watching and stopping one attempt's local ranks.
#include "launcher/local_ranks.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "runtime/core/errors.h"
#include "runtime/core/owned_fd.h"

namespace tandem::launcher {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

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
  // The rank dies with the launcher, even when the launcher is killed with SIGKILL.
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
  ::execvp(argv[0], argv.data());
  const int error = errno;
  std::fprintf(stderr, "tandem-launch: cannot run '%s': %s\n", argv[0], std::strerror(error));
  ::_exit(127);
}

void start(Running& r, pid_t launcher) {
  int fds[2];
  TANDEM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
  OwnedFd read_end(fds[0]), write_end(fds[1]);
  const pid_t pid = ::fork();
  TANDEM_CHECK(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0) exec_rank(*r.spec, write_end.get(), launcher);
  ::setpgid(pid, pid);  // as the child does: whichever runs first, the group exists
  r.pid = pid;
  r.output = std::move(read_end);
  if (!r.spec->log_path.empty()) {
    r.log =
        OwnedFd(::open(r.spec->log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    TANDEM_USER_CHECK(r.log, "--log-dir: cannot open '", r.spec->log_path,
                      "': ", std::strerror(errno));
  }
}

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a closed terminal or a full disk must not stop the job
    done += static_cast<size_t>(n);
  }
}

// Prints each whole line with the rank in front; with `flush`, the rest too (the rank is gone).
void emit_lines(Running& r, bool flush) {
  size_t start = 0;
  std::string out;
  for (size_t end; (end = r.partial.find('\n', start)) != std::string::npos; start = end + 1)
    out +=
        "[rank " + std::to_string(r.spec->rank) + "] " + r.partial.substr(start, end + 1 - start);
  r.partial.erase(0, start);
  if (flush && !r.partial.empty()) {
    out += "[rank " + std::to_string(r.spec->rank) + "] " + r.partial + "\n";
    r.partial.clear();
  }
  write_all(STDOUT_FILENO, out);
}

// Reads what is there; false at end of file.
bool read_output(Running& r) {
  char buffer[16384];
  const ssize_t n = ::read(r.output.get(), buffer, sizeof buffer);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  if (r.log) write_all(r.log.get(), std::string(buffer, static_cast<size_t>(n)));
  r.partial.append(buffer, static_cast<size_t>(n));
  emit_lines(r, false);
  return true;
}

// Signals each running rank's whole process group. A rank already reaped is left out: its group
// was emptied when it was reaped, and its id may since belong to another process.
void signal_all(std::vector<Running>& running, int signal) {
  for (Running& r : running)
    if (!r.exited) ::kill(-r.pid, signal);
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
  for (size_t i = 0; i < ranks.size(); ++i) {
    running[i].spec = &ranks[i];
    start(running[i], launcher);
  }
  AttemptResult result;
  std::optional<Clock::time_point> stopping_since;
  bool killed = false;
  size_t alive = running.size();
  int seen_stops = 0;
  auto begin_stop = [&] {
    if (stopping_since) return;
    stopping_since = Clock::now();
    signal_all(running, SIGTERM);
  };
  while (true) {
    // Output first, so that a rank's last words are printed before its exit is handled.
    std::vector<pollfd> fds;
    std::vector<Running*> of_fd;
    for (Running& r : running)
      if (r.output) fds.push_back({r.output.get(), POLLIN, 0}), of_fd.push_back(&r);
    if (fds.empty() && alive == 0) break;
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 50);
    else
      ::usleep(20000);
    for (size_t i = 0; i < fds.size(); ++i)
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !read_output(*of_fd[i])) {
        emit_lines(*of_fd[i], true);
        of_fd[i]->output.reset();
      }
    for (int status; alive > 0;) {
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      for (Running& r : running) {
        if (r.pid != pid || r.exited) continue;
        r.exited = true;
        --alive;
        RankExit exit{r.spec->rank};
        if (WIFEXITED(status)) exit.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) exit.signal = WTERMSIG(status);
        exit.stopped_by_launcher = stopping_since.has_value();
        exit.seconds = seconds_since(begin);
        // What the rank left behind in its group (helpers it started) goes with it.
        ::kill(-r.pid, SIGKILL);
        result.exits.push_back(exit);
        if ((exit.exit_code != 0 || exit.signal != 0) && !result.first_failure &&
            !exit.stopped_by_launcher) {
          result.first_failure = exit;
          result.detect_seconds = exit.seconds;
        }
      }
    }
    if (result.first_failure && alive > 0) begin_stop();
    if (stop.count > seen_stops) {
      seen_stops = stop.count;
      result.stop_signal = stop.signal;
      if (seen_stops > 1 && !killed) signal_all(running, SIGKILL), killed = true;  // asked twice
      begin_stop();
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
