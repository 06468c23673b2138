// Recording what a hung rank was doing before the launcher ends it: what /proc says of each of
// its threads (state, the system call it is in, its kernel wait channel, and its kernel stack
// where readable), then every thread's stack from gdb (gdb -batch -p PID -ex 'thread apply all
// bt', within a time limit) when gdb is installed. The /proc part comes first and always, so a
// machine without gdb, or one where ptrace is refused, still says something.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace tandem::launcher {

struct StackRequest {
  pid_t pid = -1;
  std::string path;     // the file written (replaced)
  std::string heading;  // its first line: which rank, and why its stack is taken
};

// Records every request at once (one gdb per process, in parallel) and returns after at most
// about `limit`, gdb killed if it takes longer. Returns, per request, how its stack was recorded
// ("gdb", "/proc only: gdb is not on PATH", ...).
std::vector<std::string> record_stacks(const std::vector<StackRequest>& requests,
                                       std::chrono::milliseconds limit);

}  // namespace tandem::launcher
