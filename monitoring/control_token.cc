// Reading, generating and writing the control service's token.
#include "monitoring/control_token.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "runtime/core/errors.h"
#include "runtime/core/input_file.h"
#include "runtime/core/owned_fd.h"

namespace tandem::monitoring {

namespace fs = std::filesystem;

namespace {

std::string home_directory() {
  if (const char* home = std::getenv("HOME"); home && *home) return home;
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir && *pw->pw_dir) return pw->pw_dir;
  throw UsageError(
      "control: no home directory (HOME is unset and the password file has none) to keep the "
      "generated token in; set control.token_file or TANDEM_CONTROL_TOKEN");
}

std::string strip(std::string_view text) {
  const char* space = " \t\r\n\v\f";
  const size_t begin = text.find_first_not_of(space);
  if (begin == std::string_view::npos) return "";
  const size_t end = text.find_last_not_of(space);
  return std::string(text.substr(begin, end - begin + 1));
}

// What an HTTP/2 header value can carry without escaping: printable ASCII, no spaces.
void check_token(const std::string& token, const std::string& where) {
  TANDEM_USER_CHECK(!token.empty(), "control: the token in ", where,
                    " is empty; put a secret of printable characters there");
  for (char c : token)
    TANDEM_USER_CHECK(c > ' ' && c < 127, "control: the token in ", where,
                      " holds a character that is not printable ASCII (or a space inside it); "
                      "use letters, digits and punctuation only");
}

}  // namespace

std::string default_token_path(int port) {
  return (fs::path(home_directory()) / ".tandem" / ("control-token-" + std::to_string(port)))
      .string();
}

std::string read_token_file(const std::string& path) {
  const std::string token = strip(read_input_file(
      "control token file", path, "give the file that holds the job's control token"));
  check_token(token, "'" + path + "'");
  return token;
}

std::string token_from_environment() {
  const char* env = std::getenv("TANDEM_CONTROL_TOKEN");
  if (!env || !*env) return "";
  std::string token = strip(env);
  check_token(token, "TANDEM_CONTROL_TOKEN");
  return token;
}

ControlToken resolve_control_token(const std::string& token_file, int port) {
  ControlToken out;
  if (!token_file.empty()) {
    out.value = read_token_file(token_file);
    out.source = "from control.token_file " + token_file;
    struct stat info {};
    if (::stat(token_file.c_str(), &info) == 0 && (info.st_mode & 077) != 0)
      out.source += " (warning: others may read it; chmod 600 it)";
    return out;
  }
  if (std::string from_env = token_from_environment(); !from_env.empty()) {
    out.value = std::move(from_env);
    out.source = "from TANDEM_CONTROL_TOKEN";
    return out;
  }
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    TANDEM_USER_CHECK(n > 0,
                      "control: cannot draw a random token (getrandom: ", std::strerror(errno),
                      "); set control.token_file or TANDEM_CONTROL_TOKEN");
    got += static_cast<size_t>(n);
  }
  static const char kHex[] = "0123456789abcdef";
  for (unsigned char b : bytes) {
    out.value += kHex[b >> 4];
    out.value += kHex[b & 15];
  }
  out.generated_path = default_token_path(port);
  out.source = "generated, in " + out.generated_path + " (mode 0600)";
  return out;
}

void write_generated_token(const ControlToken& token) {
  const fs::path path = token.generated_path;
  const fs::path dir = path.parent_path();
  const std::string fix = "; set control.token_file or TANDEM_CONTROL_TOKEN instead";
  if (::mkdir(dir.c_str(), 0700) != 0)
    TANDEM_USER_CHECK(errno == EEXIST, "control: cannot create ", dir.string(), ": ",
                      std::strerror(errno), fix);
  struct stat info {};
  TANDEM_USER_CHECK(::lstat(dir.c_str(), &info) == 0 && S_ISDIR(info.st_mode),
                    "control: ", dir.string(), " is not a directory", fix);
  TANDEM_USER_CHECK(info.st_uid == ::getuid() && (info.st_mode & 022) == 0,
                    "control: ", dir.string(), " is writable by others or not this user's", fix);
  // A fresh file of a fresh name, renamed over the old token: never a file someone else opened.
  const std::string temp =
      path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(::gettid());
  OwnedFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  TANDEM_USER_CHECK(fd, "control: cannot create ", temp, ": ", std::strerror(errno), fix);
  const std::string text = token.value + "\n";
  const bool written =
      ::fchmod(fd.get(), 0600) == 0 &&
      ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
      ::fsync(fd.get()) == 0;
  const int error = errno;
  fd.reset();
  if (!written || ::rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_error = written ? errno : error;
    ::unlink(temp.c_str());
    TANDEM_USER_FAIL("control: cannot write the token to ", path.string(), ": ",
                     std::strerror(rename_error), fix);
  }
}

bool tokens_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

}  // namespace tandem::monitoring
