// Opening and reading input files with a reason for every refusal.
#include "runtime/core/input_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/core/errors.h"

namespace tandem {

std::string_view file_type_name(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a file";
}

OwnedFd open_input_file(std::string_view what, const std::string& path, std::string_view fix,
                        struct stat* info) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever; for a
  // regular file it changes nothing.
  OwnedFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    const int error = errno;
    TANDEM_USER_CHECK(error != ENOENT, what, " '", path, "': does not exist; ", fix);
    const bool permissions = error == EACCES || error == EPERM;
    throw Error(detail::concat(
        what, " '", path, "': cannot be read: ", std::strerror(error), "; ",
        permissions ? "check the permissions of the file and of its directories" : fix));
  }
  struct stat status {};
  TANDEM_USER_CHECK(::fstat(fd.get(), &status) == 0, what, " '", path,
                    "': cannot be examined: ", std::strerror(errno));
  TANDEM_USER_CHECK(S_ISREG(status.st_mode), what, " '", path, "': is ",
                    file_type_name(status.st_mode), ", not a regular file; ", fix);
  if (info) *info = status;
  return fd;
}

std::string read_input_file(std::string_view what, const std::string& path, std::string_view fix) {
  struct stat info {};
  OwnedFd fd = open_input_file(what, path, fix, &info);
  std::string content;
  content.reserve(static_cast<size_t>(info.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    TANDEM_USER_CHECK(got >= 0, what, " '", path, "': cannot be read: ", std::strerror(errno),
                      "; check the file");
    if (got == 0) return content;
    content.append(buffer, static_cast<size_t>(got));
  }
}

}  // namespace tandem
