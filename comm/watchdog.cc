// Deadline waits, the heartbeat that answers peers' requests for flight records, and the "who
// never arrived" report built from those records.
#include "comm/watchdog.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

#include <unistd.h>

#include "comm/bootstrap.h"
#include "comm/faults.h"
#include "runtime/core/logging.h"
#include "runtime/core/output_file.h"

namespace tandem::comm {

namespace {

using Clock = std::chrono::steady_clock;

// Store keys (the store client prefixes them with the job's namespace).
constexpr const char* kDumpKey = "flight/requests";
std::string record_key(int world_rank) {
  return "flight/record/" + std::to_string(world_rank);
}
// Where a rank says which process it is: "<node identity hash> <pid>".
std::string process_key(int world_rank) {
  return "flight/process/" + std::to_string(world_rank);
}
std::string this_process() {
  return std::to_string(node_identity_hash()) + " " + std::to_string(::getpid());
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

std::string describe_op(const OpRecord& op) {
  std::ostringstream out;
  out << op.op;
  if (op.seq > 0) out << " #" << op.seq;
  out << " on group '" << op.group << "' (" << op.bytes << " bytes)";
  return out.str();
}

Watchdog::Watchdog(std::shared_ptr<StoreClient> store, int world_rank, WatchdogOptions options)
    : store_(std::move(store)),
      world_rank_(world_rank),
      options_(std::move(options)),
      recorder_(world_rank) {
  if (store_) {
    // Once per rank and job, so that a report can tell a dead peer on this node from a slow one.
    store_->set(process_key(world_rank_), this_process());
    heartbeat_ = std::thread([this] { heartbeat_loop(); });
  }
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

std::string flight_record_path(const std::string& flight_record_dir, int world_rank) {
  std::string dir = flight_record_dir;
  if (dir.empty()) {
    const char* log_dir = std::getenv("TANDEM_LOG_DIR");
    dir = log_dir && *log_dir ? log_dir : ".";
  }
  return dir + "/tandem-flight-rank" + std::to_string(world_rank) + ".tsv";
}

std::string Watchdog::flight_record_path() const {
  return comm::flight_record_path(options_.flight_record_dir, world_rank_);
}

// The pid of a rank's process when it runs on this node (0 otherwise or when unknown).
long Watchdog::pid_here(int member) {
  if (const auto known = pids_here_.find(member); known != pids_here_.end()) return known->second;
  long pid = 0;
  if (const auto process = store_->get(process_key(member), 0)) {
    std::istringstream in(*process);
    std::string node;
    in >> node >> pid;
    if (node != std::to_string(node_identity_hash())) pid = 0;
  }
  pids_here_[member] = pid;
  return pid;
}

bool Watchdog::exited_here(int member) {
  return process_exited(pid_here(member));
}

// What can be said of a rank that did not answer: whether its process on this node is gone.
std::string Watchdog::silent_reason(int member) {
  try {
    const long pid = pid_here(member);
    if (pid <= 0) return "";
    return " (its process " + std::to_string(pid) + " on this node " +
           (exited_here(member) ? "has exited)" : "is alive)");
  } catch (const std::exception&) {
    return "";  // the store is gone too: the report says so
  }
}

double Watchdog::report_window_s() const {
  return std::min(10.0, 3.0 * options_.heartbeat_ms / 1000.0 + 1.0);
}

void Watchdog::linger_for_peer_reports() {
  if (!options_.serves_store || fault_members_.empty()) return;
  try {
    // Until every peer has reported its own timeout (or is dead): they may time out up to a
    // whole comm.timeout_s after this rank did.
    collect_records(fault_members_, fault_since_s_,
                    options_.timeout_ms / 1000.0 + report_window_s(), true);
  } catch (const std::exception&) {
    // Our own store does not answer us: nothing left to wait for.
  }
}

std::map<int, PeerRecord> Watchdog::collect_records(const std::vector<int>& members, double since_s,
                                                    double within_s, bool timed_out_only) {
  std::map<int, PeerRecord> records;
  std::vector<int> waiting;
  for (int member : members)
    if (member != world_rank_) waiting.push_back(member);
  const auto start = Clock::now();
  while (!waiting.empty() && seconds_since(start) < within_s) {
    std::erase_if(waiting, [&](int member) {
      const auto text = store_->get(record_key(member), 0);
      const size_t newline = text ? text->find('\n') : std::string::npos;
      if (newline != std::string::npos) {
        PeerRecord record = FlightRecorder::parse(text->substr(newline + 1));
        if (record.written_s >= since_s && (record.timed_out || !timed_out_only)) {
          records[member] = std::move(record);
          return true;
        }
      }
      return exited_here(member);  // a dead process on this node will never answer
    });
    if (!waiting.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return records;
}

void Watchdog::heartbeat_loop() {
  std::unique_lock lock(stop_mutex_);
  while (!stopping_) {
    stop_.wait_for(lock, std::chrono::milliseconds(options_.heartbeat_ms));
    if (stopping_) return;
    lock.unlock();
    try {
      // The one request of a healthy job: has any rank asked for the records since we last
      // published ours?
      const int64_t requested = store_->add(kDumpKey, 0);
      if (requested > 0) publish(static_cast<uint64_t>(requested));
    } catch (const std::exception& error) {
      lock.lock();
      store_failure_ = error.what();
      return;  // the client is broken for good; a wait that times out reports it
    }
    lock.lock();
  }
}

// The whole ring, for the operator; first of all, so that it exists whatever the store does.
void Watchdog::write_record_file() {
  // Replaced whole: a process ended mid-write (the heartbeat thread may be writing when the main
  // thread exits) leaves the previous whole record, never half.
  try {
    write_output_file("flight record", flight_record_path(),
                      recorder_.serialize(reported_timeout_));
  } catch (const Error& error) {
    // A record that cannot be written must not hide the fault it is about: the store still has it.
    log_warn(error.what());
  }
}

// Writes this rank's record to its file and (the groups and pending operations only) to the
// store, answering request `generation`.
void Watchdog::publish(uint64_t generation, bool done_reporting) {
  std::lock_guard lock(publish_mutex_);
  if (generation <= published_generation_ && !done_reporting) return;
  generation = std::max(generation, published_generation_);
  reported_timeout_ = reported_timeout_ || done_reporting;  // later answers keep saying so
  write_record_file();
  store_->set(record_key(world_rank_),
              std::to_string(generation) + "\n" + recorder_.serialize(reported_timeout_, true));
  published_generation_ = generation;
}

void Watchdog::wait(const std::function<bool()>& poll, const OpRecord& op) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(options_.timeout_ms);
  auto pause = std::chrono::microseconds(0);
  for (int spins = 0;; ++spins) {
    if (poll()) return;
    if (Clock::now() >= deadline) throw CommTimeout(report(op, seconds_since(start)));
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
  out << "rank " << world_rank_ << ": " << describe_op(op) << " did not complete within "
      << waited_seconds << " s";
  const std::vector<int> members = op.members ? *op.members : std::vector<int>{};
  {
    std::lock_guard lock(publish_mutex_);
    write_record_file();
  }
  if (!store_) {
    return out.str() +
           (op.seq == 0 ? "; check that the peer posts the matching send/recv"
                        : "; no out-of-band store to tell which ranks are missing") +
           " (flight record: " + flight_record_path() + ")";
  }
  {
    std::lock_guard lock(stop_mutex_);
    if (!store_failure_.empty())
      return out.str() + "; the store cannot be asked which ranks are missing: " + store_failure_ +
             " (flight record: " + flight_record_path() + ")";
  }
  // Ask everyone for their records, publish ours, and collect the members' within a bound that
  // lets every live peer's heartbeat answer.
  std::map<int, PeerRecord> records;
  // A record counts if it was written after this wait began: peers that timed out themselves
  // and have exited left theirs, written for their own request.
  const double waited_since_s =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
      waited_seconds - 1.0;
  const double answer_s = report_window_s();
  fault_members_ = members;
  fault_since_s_ = waited_since_s;
  std::string store_trouble;
  try {
    const auto generation = static_cast<uint64_t>(store_->add(kDumpKey, 1));
    publish(generation);
    records = collect_records(members, waited_since_s, answer_s);
    // Done with the store: the rank serving it may stop once every rank has said this.
    publish(generation, true);
  } catch (const std::exception& error) {
    // What was gathered still counts; the ranks not heard from are listed as silent.
    store_trouble = error.what();
  }
  std::vector<std::string> missing, silent;
  for (int member : members) {
    if (member == world_rank_) continue;
    const auto found = records.find(member);
    if (found == records.end()) {
      silent.push_back(describe_rank(member) + silent_reason(member));
      continue;
    }
    const PeerRecord& peer = found->second;
    if (op.seq == 0) {
      // A send/recv: say what the peer is doing instead.
      out << "; " << describe_rank(member) << " is "
          << (peer.oldest_pending.empty() ? "in no communication (computing, or past this point)"
                                          : "waiting in " + peer.oldest_pending);
      continue;
    }
    const auto group = peer.groups.find(op.group);
    const GroupProgress progress = group != peer.groups.end() ? group->second : GroupProgress{};
    if (progress.entered_seq > op.seq ||
        (progress.entered_seq == op.seq && progress.entered_op == op.op))
      continue;
    std::ostringstream who;
    who << describe_rank(member).substr(5) << " (last entered on this group: "
        << (progress.entered_seq ? progress.entered_op + " #" + std::to_string(progress.entered_seq)
                                 : std::string("nothing"));
    if (!peer.oldest_pending.empty()) who << "; waiting in " << peer.oldest_pending;
    who << ")";
    missing.push_back(who.str());
  }
  auto join = [](const std::vector<std::string>& items) {
    std::string text;
    for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
    return text;
  };
  if (op.seq > 0) {
    if (!missing.empty()) {
      out << "; ranks that never arrived: " << join(missing);
    } else if (silent.empty()) {
      out << "; every rank of the group entered it, so one is stuck inside it (a dead peer or "
             "network?)";
    }
  }
  if (!silent.empty())
    out << "; ranks that did not answer within " << answer_s
        << " s (frozen, dead, or cut off from the store): " << join(silent);
  if (!store_trouble.empty()) out << "; and the store stopped answering: " << store_trouble;
  out << " (flight records: " << flight_record_path() << " and the same name per rank)";
  return out.str();
}

}  // namespace tandem::comm
