// Taking a hung process's stacks through /proc and gdb.
#include "launcher/stack_capture.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/core/errors.h"
#include "runtime/core/owned_fd.h"

namespace tandem::launcher {

namespace {

using Clock = std::chrono::steady_clock;

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// One line per thread (name, state, system call, wait channel) and its kernel stack when this
// process may read it (root, usually).
std::string proc_view(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  std::ostringstream out;
  std::string command = read_text(base + "/cmdline").substr(0, 400);
  std::replace(command.begin(), command.end(), '\0', ' ');  // the arguments, NUL-separated
  out << "--- /proc/" << pid << ": " << trimmed(command) << " ---\n";
  std::vector<long> tids;
  if (DIR* dir = ::opendir((base + "/task").c_str())) {
    while (const dirent* entry = ::readdir(dir))
      if (entry->d_name[0] != '.') tids.push_back(std::strtol(entry->d_name, nullptr, 10));
    ::closedir(dir);
  }
  if (tids.empty()) out << "(no threads readable: the process is gone)\n";
  std::sort(tids.begin(), tids.end());
  for (long tid : tids) {
    const std::string task = base + "/task/" + std::to_string(tid);
    // stat: "tid (name) state ...": the name may hold spaces and parentheses.
    const std::string stat = read_text(task + "/stat");
    const size_t open = stat.find('('), close = stat.rfind(')');
    const std::string name = open != std::string::npos && close != std::string::npos && close > open
                                 ? stat.substr(open + 1, close - open - 1)
                                 : "?";
    const std::string state =
        close != std::string::npos && close + 2 < stat.size() ? stat.substr(close + 2, 1) : "?";
    const std::string syscall = trimmed(read_text(task + "/syscall"));
    const std::string wchan = trimmed(read_text(task + "/wchan"));
    out << "thread " << tid << " (" << name << ") state " << state
        << " | syscall: " << (syscall.empty() ? "(not readable)" : syscall)
        << " | wchan: " << (wchan.empty() ? "(not readable)" : wchan) << "\n";
    const std::string kernel = trimmed(read_text(task + "/stack"));
    if (!kernel.empty()) {
      std::istringstream lines(kernel);
      for (std::string line; std::getline(lines, line);) out << "    " << line << "\n";
    }
  }
  return out.str();
}

// gdb on PATH, looked up before any fork.
std::string find_gdb() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::filesystem::path candidate = std::filesystem::path(dir.empty() ? "." : dir) / "gdb";
    std::error_code error;
    if (std::filesystem::is_regular_file(candidate, error) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return "";
}

struct Running {
  pid_t gdb = -1;
  bool done = false;
  int status = 0;
};

}  // namespace

std::vector<std::string> record_stacks(const std::vector<StackRequest>& requests,
                                       std::chrono::milliseconds limit) {
  std::vector<std::string> how(requests.size());
  std::vector<OwnedFd> files(requests.size());
  const std::string gdb = find_gdb();
  for (size_t i = 0; i < requests.size(); ++i) {
    const StackRequest& r = requests[i];
    files[i] = OwnedFd(
        ::open(r.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!files[i]) {
      how[i] = "not recorded: cannot write '" + r.path + "': " + std::strerror(errno);
      continue;
    }
    write_all(files[i].get(), r.heading + "\n" + proc_view(r.pid));
    how[i] = gdb.empty() ? "/proc only: gdb is not on PATH" : "gdb";
    if (gdb.empty())
      write_all(files[i].get(),
                "--- gdb is not on PATH: install gdb for the threads' stacks ---\n");
  }
  if (gdb.empty()) return how;
  // Everything the children need is built before the first fork: between fork and exec only
  // async-signal-safe calls (the launcher has threads: the store's, the output writer's).
  OwnedFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::vector<std::vector<std::string>> args(requests.size());
  std::vector<Running> running(requests.size());
  const pid_t launcher = ::getpid();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!files[i]) continue;
    write_all(files[i].get(), "--- gdb -batch -p " + std::to_string(requests[i].pid) +
                                  " -ex 'thread apply all bt' ---\n");
    args[i] = {
        gdb, "-batch", "-nx", "-p", std::to_string(requests[i].pid), "-ex", "thread apply all bt"};
    std::vector<char*> argv;
    for (std::string& a : args[i]) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int out = files[i].get();
    const pid_t pid = ::fork();
    if (pid < 0) {
      how[i] = std::string("/proc only: cannot start gdb: ") + std::strerror(errno);
      continue;
    }
    if (pid == 0) {
      ::setpgid(0, 0);  // killed as a group past the limit, and away from a terminal's Ctrl-C
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != launcher) ::_exit(127);
      if (null) ::dup2(null.get(), STDIN_FILENO);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::setpgid(pid, pid);
    running[i].gdb = pid;
  }
  const Clock::time_point deadline = Clock::now() + limit;
  while (true) {
    bool waiting = false;
    for (Running& r : running) {
      if (r.gdb < 0 || r.done) continue;
      if (::waitpid(r.gdb, &r.status, WNOHANG) == r.gdb)
        r.done = true;
      else
        waiting = true;
    }
    if (!waiting || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < running.size(); ++i) {
    Running& r = running[i];
    if (r.gdb < 0) continue;
    if (!r.done) {
      // A killed tracer detaches from its tracee; the rank is left as it was.
      ::kill(-r.gdb, SIGKILL);
      ::waitpid(r.gdb, &r.status, 0);
      how[i] = detail::concat("/proc, and gdb until it was stopped after ", limit.count() / 1000.0,
                              " s");
      write_all(files[i].get(), "--- gdb did not finish within the time limit ---\n");
    } else if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
      how[i] = detail::concat(
          "/proc, and gdb, which failed (", WIFEXITED(r.status) ? "exit " : "signal ",
          WIFEXITED(r.status) ? WEXITSTATUS(r.status) : WTERMSIG(r.status), ")");
    }
  }
  return how;
}

}  // namespace tandem::launcher
