// Handle lifetime rules.
#include "comm/communicator.h"

namespace tandem::comm {

CommHandle& CommHandle::operator=(CommHandle&& other) noexcept {
  if (this != &other) {
    if (work_) {
      try {
        work_->wait();
      } catch (...) {
      }
    }
    work_ = std::move(other.work_);
  }
  return *this;
}

CommHandle::~CommHandle() {
  if (!work_) return;
  try {
    work_->wait();
  } catch (...) {
    // A destructor cannot report; the owner saw (or will see) the timeout through another wait.
  }
}

void CommHandle::wait() {
  if (!work_) return;
  work_->wait();
  work_.reset();
}

bool CommHandle::test() {
  if (!work_) return true;
  if (!work_->test()) return false;
  work_.reset();
  return true;
}

}  // namespace tandem::comm
