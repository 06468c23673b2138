// A key-value store over TCP for out-of-band coordination: rendezvous when no MPI starts the job
// (torchrun-style MASTER_ADDR/MASTER_PORT), and the watchdog's record of which rank entered which
// operation, readable even when the data path is stuck. One server (rank 0, or the launcher);
// every rank is a client.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tandem::comm {

class StoreServer {
 public:
  // Listens on host:port (port 0 picks a free one).
  StoreServer(const std::string& host, int port);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return port_; }

 private:
  void accept_loop();
  void serve(int fd);
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
  std::vector<std::thread> threads_;
  std::vector<int> client_fds_;
  std::thread acceptor_;
};

class StoreClient {
 public:
  // Connects, retrying until connect_timeout_ms (the server may start after the client).
  StoreClient(const std::string& host, int port, int connect_timeout_ms);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  void set(const std::string& key, const std::string& value);
  // Waits up to timeout_ms for the key to exist; nullopt if it never did.
  std::optional<std::string> get(const std::string& key, int timeout_ms);
  // Atomically adds delta to the integer at key (0 if absent) and returns the new value.
  int64_t add(const std::string& key, int64_t delta);

 private:
  std::string request(char command, const std::string& key, const std::string& payload);
  std::mutex mutex_;  // one request at a time per connection
  int fd_ = -1;
  std::string where_;
};

}  // namespace tandem::comm
