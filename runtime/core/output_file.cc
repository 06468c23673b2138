// Output paths checked before a run, and files replaced atomically through a temporary file of a
// fresh name in the same directory (the only place where a rename is atomic).
#include "runtime/core/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "runtime/core/errors.h"
#include "runtime/core/input_file.h"
#include "runtime/core/owned_fd.h"

namespace tandem {

namespace {

[[noreturn]] void refuse(std::string_view what, const std::string& path, std::string_view problem,
                         std::string_view fix) {
  throw Error(detail::concat(what, " '", path, "': ", problem, "; ", fix));
}

// What to do about a failed system call on the way to the file.
std::string_view fix_for(int error) {
  switch (error) {
    case ENOSPC:
    case EDQUOT:
      return "free some space, or give a path on another file system";
    case EACCES:
    case EPERM:
    case EROFS:
      return "give a path in a directory this process may write to";
    default:
      return "give another path";
  }
}

struct PathParts {
  std::string directory;
  std::string name;
};

PathParts split(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

// Refuses a target that exists and is not a regular file: renaming over it would replace a device
// node, a FIFO or a symbolic link by a plain file, and a directory cannot be replaced at all.
void check_target(std::string_view what, const std::string& path) {
  TANDEM_USER_CHECK(!path.empty(), what, ": the path is empty; give a file name");
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    const int error = errno;
    // Created by the write, if its directory exists (checked_parts says what is wrong with it).
    if (error == ENOENT || error == ENOTDIR) return;
    refuse(what, path, detail::concat("cannot be examined: ", std::strerror(error)),
           fix_for(error));
  }
  if (S_ISREG(info.st_mode)) return;
  if (S_ISLNK(info.st_mode)) {
    std::error_code ignored;
    const std::string target = std::filesystem::read_symlink(path, ignored).string();
    refuse(what, path,
           detail::concat("is a symbolic link (to '", target,
                          "'), which tandem would replace by a file rather than write through"),
           "give the path of the file itself, or a new one");
  }
  if (S_ISDIR(info.st_mode))
    refuse(what, path, "is a directory", "give the path of a file, for instance one inside it");
  refuse(what, path, detail::concat("is ", file_type_name(info.st_mode), ", not a regular file"),
         "give a new path or that of a regular file (tandem writes only regular files)");
}

// The directory the file goes into, which must exist (it is not created: a typo in it would
// otherwise silently grow a new tree).
PathParts checked_parts(std::string_view what, const std::string& path) {
  PathParts parts = split(path);
  if (parts.name.empty() || parts.name == "." || parts.name == "..")
    refuse(what, path, "names a directory, not a file", "give the path of a file");
  struct stat info {};
  if (::stat(parts.directory.c_str(), &info) != 0) {
    const int error = errno;
    if (error == ENOENT)
      refuse(what, path, detail::concat("its directory '", parts.directory, "' does not exist"),
             "create it first, or give a path in an existing directory");
    refuse(what, path,
           detail::concat("its directory '", parts.directory,
                          "' cannot be examined: ", std::strerror(error)),
           fix_for(error));
  }
  if (!S_ISDIR(info.st_mode))
    refuse(what, path,
           detail::concat("'", parts.directory, "' is ", file_type_name(info.st_mode),
                          ", not a directory"),
           "give a path inside a directory");
  return parts;
}

// A file next to the target whose name no one else uses: O_EXCL makes the name ours, so another
// process's file of the same name (a user's PATH.tmp, another run's temporary) is never touched.
struct TemporaryFile {
  OwnedFd fd;
  std::string path;
};

TemporaryFile create_temporary(std::string_view what, const std::string& target,
                               const PathParts& parts) {
  std::random_device entropy;
  // A hidden name, cut short enough that the suffix cannot push it past NAME_MAX (255).
  const std::string prefix =
      detail::concat(parts.directory, "/.", parts.name.substr(0, 200), ".tmp-");
  int error = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[17];
    std::snprintf(suffix, sizeof suffix, "%08x%08x", entropy(), entropy());
    TemporaryFile file{OwnedFd(), prefix + suffix};
    file.fd = OwnedFd(
        ::open(file.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666));
    if (file.fd) return file;
    error = errno;
    if (error != EEXIST) break;
  }
  refuse(what, target,
         detail::concat("cannot create a file in '", parts.directory, "': ", std::strerror(error)),
         fix_for(error));
}

// Removes the temporary file unless it was renamed into place.
struct RemoveUnlessKept {
  const std::string& path;
  bool kept = false;
  ~RemoveUnlessKept() {
    if (!kept) ::unlink(path.c_str());
  }
};

// 0, or the errno of the write that failed.
int write_all(int fd, std::string_view content) {
  while (!content.empty()) {
    const ssize_t written = ::write(fd, content.data(), content.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) return errno;
    content.remove_prefix(static_cast<size_t>(written));
  }
  return 0;
}

}  // namespace

void check_output_path(std::string_view what, const std::string& path) {
  check_target(what, path);
  const PathParts parts = checked_parts(what, path);
  TemporaryFile probe = create_temporary(what, path, parts);
  ::unlink(probe.path.c_str());
}

void write_output_file(std::string_view what, const std::string& path, std::string_view content) {
  check_target(what, path);
  const PathParts parts = checked_parts(what, path);
  TemporaryFile temporary = create_temporary(what, path, parts);
  RemoveUnlessKept cleanup{temporary.path};
  auto fail = [&](std::string_view step, int error) {
    refuse(what, path, detail::concat("cannot ", step, ": ", std::strerror(error)), fix_for(error));
  };
  // A file replaced keeps its permissions (a private file must not become world-readable); a
  // new one gets 0666 less the umask, as open() gave it.
  struct stat old {};
  if (::stat(path.c_str(), &old) == 0 && ::fchmod(temporary.fd.get(), old.st_mode & 07777) != 0)
    fail("keep the permissions of the file it replaces", errno);
  if (const int error = write_all(temporary.fd.get(), content)) fail("write it", error);
  // The data must be on disk before the rename makes it the file: otherwise a crash right after
  // could leave an empty file where the old one was.
  if (::fsync(temporary.fd.get()) != 0) fail("write it (fsync)", errno);
  if (::close(temporary.fd.release()) != 0) fail("write it (close)", errno);
  // The target may have changed since the run began; it must still be ours to replace.
  check_target(what, path);
  if (::rename(temporary.path.c_str(), path.c_str()) != 0)
    fail("rename the written file over it", errno);
  cleanup.kept = true;
  // Make the rename itself durable. A file system that cannot sync a directory still shows the
  // new file, so a failure here is not worth losing the result over.
  OwnedFd directory(::open(parts.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (directory) ::fsync(directory.get());
}

}  // namespace tandem
