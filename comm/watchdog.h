// The hang watchdog. Operations are recorded only in this process (the flight recorder); the
// store is touched once per heartbeat, whatever the number of collectives. A wait that passes
// comm.timeout_s asks every peer, through the store, to publish its record, writes this rank's
// to comm.flight_record_dir, and throws CommTimeout naming the op, its sequence number, the
// group and the ranks that never arrived or never answered.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/flight_recorder.h"
#include "comm/store.h"

namespace tandem::comm {

struct WatchdogOptions {
  static WatchdogOptions with_timeout(int timeout_ms) {
    WatchdogOptions options;
    options.timeout_ms = timeout_ms;
    return options;
  }
  int timeout_ms = 300000;
  // Where each rank writes its flight record when a wait times out; empty: the launcher's log
  // directory (TANDEM_LOG_DIR) when there is one, else the working directory.
  std::string flight_record_dir;
  // How often the heartbeat thread asks the store whether a peer wants the records: one request
  // per interval is all the store sees of a healthy job.
  int heartbeat_ms = 1000;
  // This process serves the job's store (rank 0, when no launcher does).
  bool serves_store = false;
};

// The file a rank's flight record goes to: in `flight_record_dir`, or when that is empty in the
// launcher's log directory (TANDEM_LOG_DIR) when there is one, else in the working directory.
std::string flight_record_path(const std::string& flight_record_dir, int world_rank);

class Watchdog {
 public:
  // store may be null (single process, or no out-of-band channel): reports then say so.
  Watchdog(std::shared_ptr<StoreClient> store, int world_rank, WatchdogOptions options);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  int timeout_ms() const { return options_.timeout_ms; }
  int world_rank() const { return world_rank_; }
  const std::shared_ptr<StoreClient>& store() const { return store_; }
  FlightRecorder& recorder() { return recorder_; }
  const FlightRecorder& recorder() const { return recorder_; }

  // Records the op (and sets op.ticket); no communication.
  void enter(OpRecord& op) { recorder_.enter(op); }
  void complete(const OpRecord& op) { recorder_.complete(op); }
  // Polls until poll() is true, sleeping progressively longer (never burning a core for long);
  // past the deadline throws CommTimeout with the report.
  void wait(const std::function<bool()>& poll, const OpRecord& op);
  std::string report(const OpRecord& op, double waited_seconds);
  // Where this rank's record is written on a timeout.
  std::string flight_record_path() const;
  // How long a timed-out rank waits for its peers' records.
  double report_window_s() const;
  // Called before a process exits on a communication fault: if it serves the store, it keeps
  // serving for one report window, so that the peers' own reports can still read the records.
  void linger_for_peer_reports();

 private:
  void heartbeat_loop();
  void write_record_file();  // under publish_mutex_
  // The members' records written since `since_s` (unix s), waiting up to `within_s` for each
  // that has not answered yet and is not known dead.
  std::map<int, PeerRecord> collect_records(const std::vector<int>& members, double since_s,
                                            double within_s, bool timed_out_only = false);
  long pid_here(int member);
  bool exited_here(int member);
  std::string silent_reason(int member);
  // done_reporting: this rank timed out itself and has read what it needs from the store.
  void publish(uint64_t generation, bool done_reporting = false);
  std::shared_ptr<StoreClient> store_;
  int world_rank_;
  WatchdogOptions options_;
  FlightRecorder recorder_;
  std::mutex publish_mutex_;
  uint64_t published_generation_ = 0;
  bool reported_timeout_ = false;  // under publish_mutex_
  std::mutex stop_mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::string store_failure_;  // what the heartbeat learnt about the store, under stop_mutex_
  // The last timed-out op's members and since when their records count (for the store's host
  // lingering after a fault); the main thread's only.
  std::vector<int> fault_members_;
  double fault_since_s_ = 0;
  std::map<int, long> pids_here_;
  std::thread heartbeat_;
};

// "all_reduce #3 on group 'world' (4096 bytes)"
std::string describe_op(const OpRecord& op);

}  // namespace tandem::comm
