// The per-step log (--log-jsonl PATH): one JSON object per line, appended by the reporting rank
// after every step (step, loss, lr, grad_norm, tokens, step_seconds, restart) and every
// evaluation (step, eval_loss). Each record is one write() of a whole line to a file opened with
// O_APPEND, so a reader (or a crash) sees whole records only, and a restarted run appends to the
// same file.
#pragma once

#include <string>

#include "runtime/core/owned_fd.h"

namespace tandem {

class StepLog {
 public:
  // Opens (creating) `path` for appending; it must be a regular file or absent.
  explicit StepLog(const std::string& path);
  void step(int64_t step, double loss, double lr, double grad_norm, int64_t tokens,
            double step_seconds, int64_t restart);
  void evaluation(int64_t step, double eval_loss);

 private:
  void append(const std::string& line);
  std::string path_;
  OwnedFd fd_;
};

}  // namespace tandem
