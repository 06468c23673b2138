// A key-value store over TCP for out-of-band coordination: rendezvous when no MPI starts the job
// (torchrun-style MASTER_ADDR/MASTER_PORT), and the watchdog's record of which rank entered which
// operation, readable even when the data path is stuck. One server (rank 0, or the launcher);
// every rank is a client.
//
// The server must outlive hostile or broken clients (a port scanner, a rank of another job, a
// client that dies mid-request), and clients must outlive a broken server (frozen, overloaded or
// gone): the server bounds what each connection may cost it, and every client request has a
// deadline. The wire protocol is described in store.cc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/core/owned_fd.h"

namespace tandem::comm {

// What one client may cost the server. A request over a limit gets an error reply and its
// connection is closed; the other connections are not affected.
struct StoreLimits {
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = size_t{16} << 20;
  size_t max_stored_bytes = size_t{1} << 30;  // all keys and values together
  // Replies queued for a client that does not read them.
  size_t max_output_bytes_per_connection = size_t{64} << 20;
  // 0: the descriptor limit (RLIMIT_NOFILE, raised at construction) less fd_reserve, so the rest
  // of the process (UCX, MPI, files) still finds descriptors.
  size_t max_connections = 0;
  size_t fd_reserve = 64;
  // Buffered input of one connection is bounded by the largest request these limits allow.
  size_t max_input_bytes_per_connection() const {
    return 1 + 4 + max_key_bytes + 4 + max_value_bytes;
  }
};

struct StoreOptions {
  // Non-empty: every client must say this token in its hello before anything else.
  std::string token;
  StoreLimits limits;
};

struct StoreStats {
  uint64_t open_connections = 0;
  uint64_t accepted_connections = 0;  // admitted since the start
  uint64_t refused_connections = 0;   // accepted and closed at once: over the connection limit
  uint64_t requests_served = 0;       // answered, errors included
  uint64_t malformed_requests = 0;    // protocol errors, limits exceeded, wrong tokens
  uint64_t stored_bytes = 0;          // keys and values held
  uint64_t buffered_input_bytes = 0;  // memory held for requests not yet complete
  uint64_t parked_gets = 0;           // gets waiting for their key
};

class StoreServer {
 public:
  // Listens on host:port (port 0 picks a free one) and serves from one event-loop thread.
  StoreServer(const std::string& host, int port, StoreOptions options);
  StoreServer(const std::string& host, int port) : StoreServer(host, port, StoreOptions{}) {}
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return port_; }
  StoreStats stats() const;

 private:
  class Loop;
  std::unique_ptr<Loop> loop_;
  int port_ = 0;
};

struct StoreClientOptions {
  int connect_timeout_ms = 30000;  // retry connecting until then (the server may start later)
  int request_timeout_ms = 10000;  // deadline of every request, added to a get's own timeout
  std::string token;               // sent in the hello
  std::string key_prefix;          // namespace: prepended to every key (job id / attempt)
  std::string host_description = "rank 0";  // who serves the store, for error messages
};

class StoreClient {
 public:
  // Connects, retrying until options.connect_timeout_ms, and says hello with options.token.
  StoreClient(const std::string& host, int port, StoreClientOptions options);
  // Default options, but for connect_timeout_ms.
  StoreClient(const std::string& host, int port, int connect_timeout_ms);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  // Each request throws StoreLost when the server misses the deadline or the connection is lost
  // (and at once for every later request: the stream is then in an unknown state), and
  // tandem::Error with the server's text when the server refuses the request.
  void set(const std::string& key, const std::string& value);
  // Waits up to timeout_ms for the key to exist; nullopt if it never did.
  std::optional<std::string> get(const std::string& key, int timeout_ms);
  // Atomically adds delta to the integer at key (0 if absent) and returns the new value.
  int64_t add(const std::string& key, int64_t delta);

  // Requests sent so far, the hello included (a heartbeat can tell the client is in use).
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  const std::string& where() const { return where_; }  // host:port

 private:
  enum class Status : uint8_t { kNotFound = 0, kOk = 1, kError = 2 };
  struct Reply {
    Status status;
    std::string payload;
  };
  Reply request(char command, const std::string& key, const std::string& payload,
                int extra_timeout_ms);
  [[noreturn]] void fail(const std::string& message);

  StoreClientOptions options_;
  std::string where_;
  std::atomic<uint64_t> requests_{0};
  std::mutex mutex_;  // one request at a time per connection
  OwnedFd fd_;
  std::string broken_;  // why the connection is unusable; empty while it is fine
};

}  // namespace tandem::comm
