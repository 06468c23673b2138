// Appending whole JSON lines to the per-step log.
#include "runtime/train/step_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"

namespace tandem {

StepLog::StepLog(const std::string& path) : path_(path) {
  check_output_path("--log-jsonl", path);  // a regular file or absent, in a writable directory
  fd_ = OwnedFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644));
  TANDEM_USER_CHECK(fd_, "--log-jsonl '", path, "': cannot open it: ", std::strerror(errno));
}

void StepLog::append(const std::string& line) {
  const ssize_t n = ::write(fd_.get(), line.data(), line.size());
  TANDEM_USER_CHECK(n == static_cast<ssize_t>(line.size()), "--log-jsonl '", path_,
                    "': cannot append a record: ", n < 0 ? std::strerror(errno) : "short write");
}

void StepLog::step(int64_t step, double loss, double lr, double grad_norm, int64_t tokens,
                   double step_seconds, int64_t restart) {
  const nlohmann::json record = {{"step", step},      {"loss", loss},
                                 {"lr", lr},          {"grad_norm", grad_norm},
                                 {"tokens", tokens},  {"step_seconds", step_seconds},
                                 {"restart", restart}};
  append(record.dump() + "\n");
}

void StepLog::evaluation(int64_t step, double eval_loss) {
  const nlohmann::json record = {{"step", step}, {"eval_loss", eval_loss}};
  append(record.dump() + "\n");
}

}  // namespace tandem
