// Deadline waits and the "who never arrived" report.
#include "comm/watchdog.h"

#include <chrono>
#include <sstream>
#include <thread>

#include "comm/communicator.h"

namespace tandem::comm {

namespace {
std::string arrival_key(const std::string& group, int world_rank) {
  return "tandem/entered/" + group + "/" + std::to_string(world_rank);
}
}  // namespace

Watchdog::Watchdog(std::shared_ptr<StoreClient> store, int world_rank, int timeout_ms)
    : store_(std::move(store)), world_rank_(world_rank), timeout_ms_(timeout_ms) {}

void Watchdog::enter(const OpRecord& op) {
  if (store_) store_->set(arrival_key(op.group, world_rank_), std::to_string(op.seq) + " " + op.op);
}

void Watchdog::wait(const std::function<bool()>& poll, const OpRecord& op) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(timeout_ms_);
  auto pause = std::chrono::microseconds(0);
  for (int spins = 0;; ++spins) {
    if (poll()) return;
    const auto now = Clock::now();
    if (now >= deadline)
      throw CommTimeout(report(op, std::chrono::duration<double>(now - start).count()));
    // Spin briefly for latency, then back off to sleeping up to 1 ms between polls.
    if (spins > 200) {
      pause = std::min(std::chrono::microseconds(1000), pause + std::chrono::microseconds(20));
      std::this_thread::sleep_for(pause);
    } else {
      std::this_thread::yield();
    }
  }
}

std::string Watchdog::report(const OpRecord& op, double waited_seconds) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << "rank " << world_rank_ << ": " << op.op << " #" << op.seq << " on group '" << op.group
      << "' (" << op.bytes << " bytes) did not complete within " << waited_seconds << " s";
  if (op.seq == 0) return out.str() + "; check that the peer posts the matching send/recv";
  if (!store_) return out.str() + "; no out-of-band store to tell which ranks are missing";
  std::vector<std::string> missing;
  for (int member : op.members) {
    const auto entered = store_->get(arrival_key(op.group, member), 200);
    uint64_t seq = 0;
    std::string name;
    if (entered) std::istringstream(*entered) >> seq >> name;
    if (entered && (seq > op.seq || (seq == op.seq && name == op.op))) continue;
    std::ostringstream who;
    who << member << " (last entered on this group: "
        << (entered ? name + " #" + std::to_string(seq) : std::string("nothing")) << ")";
    missing.push_back(who.str());
  }
  if (missing.empty()) {
    out << "; every rank of the group entered it, so one is stuck inside it (a dead peer or "
           "network?)";
  } else {
    out << "; ranks that never arrived: ";
    for (size_t i = 0; i < missing.size(); ++i) out << (i ? ", " : "") << missing[i];
  }
  return out.str();
}

}  // namespace tandem::comm
