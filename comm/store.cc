// TCP key-value store: the server is one epoll event loop over non-blocking sockets; the client is
// one connection whose every request has a deadline.
//
// Protocol. A request is
//   command  1 byte: 'H' hello, 'S' set, 'G' get, 'A' add
//   key      uint32 little-endian length, then that many bytes
//   payload  uint32 little-endian length, then that many bytes
// and its reply is
//   status   1 byte: 0 not found, 1 ok, 2 error
//   payload  uint32 little-endian length, then the value or the error's text.
// 'H' hello: empty key, payload = the client's token; it is every client's first request. A server
//   with a token refuses a wrong one, and anything sent before the hello.
// 'S' set: payload = the value.
// 'G' get: payload = decimal timeout in ms. The reply waits until the key exists (ok, its value)
//   or the timeout passed (not found).
// 'A' add: payload = decimal int64 delta; the stored value (0 when absent) must be a decimal int64
//   too. Replies with the new value.
// Requests of one connection are answered in order. After an error reply the server closes the
// connection: a client that sent something malformed cannot be trusted to be in step.
#include "comm/store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "comm/faults.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"

namespace tandem::comm {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint8_t kNotFound = 0;
constexpr uint8_t kOk = 1;
constexpr uint8_t kError = 2;
constexpr size_t kHeaderBytes = 1 + 4 + 4;  // command and the two lengths
// A decimal int64 with its sign has at most 20 characters; a little slack, no more, so a get or an
// add cannot make the server buffer a large payload it will only parse as a number.
constexpr size_t kNumberPayloadBytes = 32;
// A get waits at most this long, whatever it asks: keeps deadline arithmetic far from overflow.
constexpr int64_t kMaxGetWaitMs = int64_t{7} * 24 * 3600 * 1000;
constexpr char kTokenMismatch[] =
    "store token mismatch: set TANDEM_STORE_TOKEN to the job's token (the one rank 0 was started "
    "with) on every rank";

void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* p) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(p[i]);
  return value;
}

// The whole text, and nothing else, must be the number (no sign '+', no spaces).
std::optional<int64_t> parse_int64(std::string_view text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || stop != end) return std::nullopt;
  return value;
}

// Takes as long for any two tokens of the same length, so a client can't find the token byte by
// byte from the server's reply times.
bool same_token(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned difference = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    difference |= static_cast<unsigned>(x ^ y);
  }
  return difference == 0;
}

// Keys in messages may come from a hostile client or be binary: cut and escape them.
std::string printable(std::string_view text) {
  constexpr size_t kShown = 100;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  if (text.size() > kShown) out += "...";
  return out;
}

const char* command_name(char command) {
  switch (command) {
    case 'H':
      return "hello";
    case 'S':
      return "set";
    case 'G':
      return "get";
    case 'A':
      return "add";
    default:
      return nullptr;
  }
}

struct AddrInfoDeleter {
  void operator()(addrinfo* info) const { ::freeaddrinfo(info); }
};

sockaddr_in resolve(const std::string& host, int port) {
  TANDEM_USER_CHECK(port >= 0 && port <= 65535, "store port ", port, " is not a TCP port");
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* raw = nullptr;
  const int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &raw);
  std::unique_ptr<addrinfo, AddrInfoDeleter> result(raw);
  TANDEM_USER_CHECK(status == 0 && result, "cannot resolve store host '", host,
                    "': ", gai_strerror(status));
  sockaddr_in address{};
  std::memcpy(&address, result->ai_addr, sizeof address);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

// A job of thousands of ranks keeps one connection per rank open to rank 0, more than the usual
// soft limit of 1024 descriptors; the hard limit is what the administrator allows.
size_t raise_descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  constexpr rlim_t kCap = rlim_t{1} << 20;  // RLIM_INFINITY would overflow what follows
  return static_cast<size_t>(std::min(limit.rlim_cur, kCap));
}

void set_no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int milliseconds_until(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  // Rounded up: waking a little early would only spin once more before the deadline.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

class StoreServer::Loop {
 public:
  Loop(OwnedFd listener, StoreOptions options, size_t max_connections);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;
  StoreStats stats() const;

 private:
  struct Connection {
    uint64_t id = 0;
    OwnedFd fd;
    std::string in;            // received and not yet parsed
    size_t counted_input = 0;  // in's capacity as counted in buffered_input_
    std::string out;           // replies not yet sent, from out_sent on
    size_t out_sent = 0;
    bool watching_output = false;
    bool greeted = false;
    // After an error reply: input is discarded, the reply flushed, then the connection closed
    // when the client closes its end or a moment has passed.
    bool closing = false;
    bool half_closed = false;                   // the error reply is out and the FIN after it
    std::optional<std::string> parked_key;      // a get waiting for this key
    std::optional<Clock::time_point> deadline;  // of the parked get, or of the closing
  };

  // epoll data of the two descriptors that are not connections; connection ids follow.
  static constexpr uint64_t kListenerId = 0;
  static constexpr uint64_t kWakeId = 1;

  void run();
  int next_timeout_ms() const;
  void accept_all();
  void shed_connection();
  void on_event(uint64_t id, uint32_t events);
  bool receive(Connection& c);
  bool process(Connection& c);
  bool execute(Connection& c, char command, std::string_view key, std::string_view payload);
  std::optional<std::string> over_capacity(std::string_view key, size_t value_bytes) const;
  void put(std::string_view key, std::string value);  // wakes the gets parked on key
  bool reply(Connection& c, uint8_t status, std::string_view payload);
  bool refuse(Connection& c, const std::string& why);
  bool flush(Connection& c);
  void half_close(Connection& c);
  void close_connection(Connection& c);
  void wake(const std::string& key, const std::string& value);
  void unpark(Connection& c);
  void set_deadline(Connection& c, std::optional<Clock::time_point> deadline);
  void expire_deadlines();
  void resume_runnable();
  void count_input(Connection& c);
  void watch(Connection& c);

  const StoreOptions options_;
  const size_t max_connections_;
  OwnedFd listener_;
  OwnedFd epoll_;
  OwnedFd wake_;
  // Held so that, out of descriptors, the loop can still accept (and at once close) a connection
  // instead of spinning on a listener that stays readable.
  OwnedFd spare_;
  std::optional<Clock::time_point> listener_paused_until_;

  std::unordered_map<uint64_t, Connection> connections_;
  uint64_t next_id_ = 2;
  std::map<std::string, std::string, std::less<>> values_;
  std::map<std::string, std::set<uint64_t>, std::less<>> parked_;
  std::set<std::pair<Clock::time_point, uint64_t>> deadlines_;
  std::vector<uint64_t> runnable_;  // connections whose get was answered: parse what follows it
  std::vector<char> scratch_ = std::vector<char>(size_t{64} << 10);
  uint64_t logged_refusals_ = 0;
  uint64_t logged_errors_ = 0;

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> open_{0}, accepted_{0}, refused_{0}, served_{0}, malformed_{0}, stored_{0},
      buffered_input_{0}, parked_gets_{0};
  std::thread thread_;  // last: starts once everything above exists
};

StoreServer::Loop::Loop(OwnedFd listener, StoreOptions options, size_t max_connections)
    : options_(std::move(options)),
      max_connections_(max_connections),
      listener_(std::move(listener)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      spare_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
  TANDEM_CHECK(epoll_ && wake_, "store event loop: ", std::strerror(errno));
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kListenerId;
  TANDEM_CHECK(::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &event) == 0,
               "store epoll: ", std::strerror(errno));
  event.data.u64 = kWakeId;
  TANDEM_CHECK(::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &event) == 0,
               "store epoll: ", std::strerror(errno));
  thread_ = std::thread([this] { run(); });
}

StoreServer::Loop::~Loop() {
  stopping_ = true;
  const uint64_t one = 1;
  // Only fails when the counter is saturated, and then the loop is awake anyway.
  [[maybe_unused]] const ssize_t written = ::write(wake_.get(), &one, sizeof one);
  thread_.join();
}

StoreStats StoreServer::Loop::stats() const {
  StoreStats s;
  s.open_connections = open_.load();
  s.accepted_connections = accepted_.load();
  s.refused_connections = refused_.load();
  s.requests_served = served_.load();
  s.malformed_requests = malformed_.load();
  s.stored_bytes = stored_.load();
  s.buffered_input_bytes = buffered_input_.load();
  s.parked_gets = parked_gets_.load();
  return s;
}

void StoreServer::Loop::run() {
  std::array<epoll_event, 256> events;
  while (!stopping_) {
    // Nothing a client sends may end the loop: whatever goes wrong costs only that connection,
    // and a failure of the loop itself is retried after a pause instead of ending the store.
    try {
      const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                                 next_timeout_ms());
      if (n < 0) {
        if (errno == EINTR) continue;
        log_warn("rendezvous store: epoll_wait: ", std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id == kWakeId) {
          uint64_t count = 0;
          [[maybe_unused]] const ssize_t got = ::read(wake_.get(), &count, sizeof count);
        } else if (id == kListenerId) {
          accept_all();
        } else {
          try {
            on_event(id, events[i].events);
          } catch (const std::exception& error) {
            // bad_alloc for a large value, most likely: drop that client, keep the others.
            auto it = connections_.find(id);
            if (it != connections_.end()) close_connection(it->second);
            log_warn("rendezvous store: dropped a connection: ", error.what());
          }
        }
      }
      if (listener_paused_until_ && Clock::now() >= *listener_paused_until_) {
        listener_paused_until_.reset();
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = kListenerId;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener_.get(), &event);
      }
      expire_deadlines();
      resume_runnable();
    } catch (const std::exception& error) {
      log_warn("rendezvous store: ", error.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

int StoreServer::Loop::next_timeout_ms() const {
  if (!runnable_.empty()) return 0;
  std::optional<Clock::time_point> next;
  if (!deadlines_.empty()) next = deadlines_.begin()->first;
  if (listener_paused_until_ && (!next || *listener_paused_until_ < *next))
    next = listener_paused_until_;
  return next ? milliseconds_until(*next) : -1;
}

void StoreServer::Loop::accept_all() {
  // A few per turn, so that in a storm of connections the hang-ups of those accepted last turn
  // are seen (and their descriptors freed) before many more are taken on, and the clients
  // already connected still get their turns.
  for (int i = 0; i < 64; ++i) {
    OwnedFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        shed_connection();
      return;
    }
    if (connections_.size() >= max_connections_) {
      ++refused_;
      if (logged_refusals_++ == 0)
        log_warn("rendezvous store: more than ", max_connections_,
                 " connections; refusing new ones (later refusals are counted, not logged)");
      continue;  // fd closes here
    }
    set_no_delay(fd.get());
    const uint64_t id = next_id_++;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &event) != 0) {
      ++refused_;
      continue;
    }
    Connection& c = connections_[id];
    c.id = id;
    c.fd = std::move(fd);
    ++accepted_;
    open_ = connections_.size();
  }
}

void StoreServer::Loop::shed_connection() {
  spare_.reset();
  OwnedFd doomed(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (doomed) ++refused_;
  doomed.reset();
  spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (logged_refusals_++ == 0)
    log_warn("rendezvous store: the process is out of file descriptors; refusing connections");
  if (!doomed || !spare_) {
    // Still no descriptor (another thread took it): stop listening a moment rather than spin.
    epoll_event event{};
    event.data.u64 = kListenerId;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener_.get(), &event);
    listener_paused_until_ = Clock::now() + std::chrono::milliseconds(100);
  }
}

void StoreServer::Loop::on_event(uint64_t id, uint32_t events) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;  // closed earlier in this batch
  Connection& c = it->second;
  if (events & (EPOLLERR | EPOLLHUP)) return close_connection(c);
  if ((events & EPOLLOUT) && !flush(c)) return;
  if (events & EPOLLIN) receive(c);
}

// Each function below that returns bool returns false when it closed (destroyed) the connection.

bool StoreServer::Loop::receive(Connection& c) {
  const size_t limit = options_.limits.max_input_bytes_per_connection();
  // Bounded per turn: one fast sender must not starve the other connections.
  size_t budget = size_t{1} << 20;
  while (budget > 0) {
    // Never more than one byte past the limit: memory grows only with what was received, and
    // only until the limit shows.
    const size_t room =
        c.closing ? scratch_.size() : std::min(scratch_.size(), limit + 1 - c.in.size());
    const ssize_t n = ::recv(c.fd.get(), scratch_.data(), room, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      close_connection(c);
      return false;
    }
    if (n == 0) {
      close_connection(c);
      return false;
    }
    budget -= std::min(budget, static_cast<size_t>(n));
    if (c.closing) continue;
    c.in.append(scratch_.data(), static_cast<size_t>(n));
    count_input(c);
    if (!process(c)) return false;
    if (c.closing) continue;
    if (c.in.size() > limit)
      return refuse(c, "more than " + std::to_string(limit) +
                           " bytes of requests are waiting on this connection");
  }
  return true;
}

bool StoreServer::Loop::process(Connection& c) {
  const StoreLimits& limits = options_.limits;
  size_t at = 0;
  while (!c.closing && !c.parked_key) {
    const size_t have = c.in.size() - at;
    if (have < 1) break;
    const char command = c.in[at];
    const char* name = command_name(command);
    if (!name) {
      char byte[8];
      std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(command));
      return refuse(c, std::string("unknown store command byte ") + byte +
                           " (is this a tandem store client?)");
    }
    // On a store with a token, nothing but the hello is read (or buffered) from a client that
    // has not said it: a stranger costs at most a hello's bytes.
    if (!options_.token.empty() && !c.greeted && command != 'H') return refuse(c, kTokenMismatch);
    if (have < 5) break;
    const uint32_t key_bytes = get_u32(&c.in[at + 1]);
    if (command == 'H' && key_bytes != 0)
      return refuse(c,
                    "a hello carries no key, this one has " + std::to_string(key_bytes) + " bytes");
    if (key_bytes > limits.max_key_bytes)
      return refuse(c, std::string("the key of a ") + name + " has " + std::to_string(key_bytes) +
                           " bytes, over the store's limit of " +
                           std::to_string(limits.max_key_bytes));
    if (have < kHeaderBytes + key_bytes) break;
    const uint32_t payload_bytes = get_u32(&c.in[at + 5 + key_bytes]);
    const size_t payload_limit = command == 'S'   ? limits.max_value_bytes
                                 : command == 'H' ? limits.max_key_bytes
                                                  : kNumberPayloadBytes;
    if (payload_bytes > payload_limit)
      return refuse(c, std::string("the ") + (command == 'S' ? "value" : "payload") + " of a " +
                           name + " has " + std::to_string(payload_bytes) +
                           " bytes, over the store's limit of " + std::to_string(payload_limit));
    const size_t total = kHeaderBytes + key_bytes + payload_bytes;
    if (have < total) break;
    const std::string_view key(&c.in[at + 5], key_bytes);
    const std::string_view payload(&c.in[at + kHeaderBytes + key_bytes], payload_bytes);
    at += total;
    if (!execute(c, command, key, payload)) return false;
  }
  if (c.closing) {
    c.in.clear();
  } else {
    c.in.erase(0, at);
  }
  // A connection that once sent a large value should not keep its buffer for good.
  if (c.in.capacity() > (size_t{64} << 10) && c.in.capacity() > 4 * c.in.size())
    c.in.shrink_to_fit();
  count_input(c);
  return true;
}

bool StoreServer::Loop::execute(Connection& c, char command, std::string_view key,
                                std::string_view payload) {
  const bool guarded = !options_.token.empty();
  if (command == 'H') {
    if (guarded && !same_token(payload, options_.token)) return refuse(c, kTokenMismatch);
    c.greeted = true;
    return reply(c, kOk, "");
  }
  if (guarded && !c.greeted) return refuse(c, kTokenMismatch);
  if (command == 'S') {
    if (auto full = over_capacity(key, payload.size())) return refuse(c, *full);
    put(key, std::string(payload));
    return reply(c, kOk, "");
  }
  if (command == 'G') {
    const auto timeout_ms = parse_int64(payload);
    if (!timeout_ms || *timeout_ms < 0)
      return refuse(c, "the timeout of a get, '" + printable(payload) +
                           "', is not a whole number of milliseconds");
    auto it = values_.find(key);
    if (it != values_.end()) return reply(c, kOk, it->second);
    if (*timeout_ms == 0) return reply(c, kNotFound, "");
    c.parked_key.emplace(key);
    parked_[*c.parked_key].insert(c.id);
    ++parked_gets_;
    set_deadline(c, Clock::now() + std::chrono::milliseconds(std::min(*timeout_ms, kMaxGetWaitMs)));
    return true;
  }
  // 'A': process() let no other command through.
  const auto delta = parse_int64(payload);
  if (!delta)
    return refuse(c, "the delta of an add, '" + printable(payload) + "', is not a decimal int64");
  int64_t current = 0;
  auto it = values_.find(key);
  if (it != values_.end()) {
    const auto stored = parse_int64(it->second);
    if (!stored)
      return refuse(c, "cannot add to '" + printable(key) + "': its value, '" +
                           printable(it->second) + "', is not a decimal int64");
    current = *stored;
  }
  int64_t sum = 0;
  if (__builtin_add_overflow(current, *delta, &sum))
    return refuse(c, "adding " + std::to_string(*delta) + " to '" + printable(key) + "' (" +
                         std::to_string(current) + ") overflows int64");
  std::string text = std::to_string(sum);
  if (auto full = over_capacity(key, text.size())) return refuse(c, *full);
  put(key, text);
  return reply(c, kOk, text);
}

std::optional<std::string> StoreServer::Loop::over_capacity(std::string_view key,
                                                            size_t value_bytes) const {
  auto it = values_.find(key);
  const uint64_t before = it == values_.end() ? 0 : key.size() + it->second.size();
  const uint64_t after = stored_.load() - before + key.size() + value_bytes;
  if (after <= options_.limits.max_stored_bytes) return std::nullopt;
  return "the store is full: keeping '" + printable(key) + "' would take it to " +
         std::to_string(after) + " bytes, over its limit of " +
         std::to_string(options_.limits.max_stored_bytes);
}

void StoreServer::Loop::put(std::string_view key, std::string value) {
  auto it = values_.find(key);
  const uint64_t before = it == values_.end() ? 0 : key.size() + it->second.size();
  stored_ = stored_.load() - before + key.size() + value.size();
  if (it == values_.end()) {
    it = values_.emplace(std::string(key), std::move(value)).first;
  } else {
    it->second = std::move(value);
  }
  wake(it->first, it->second);
}

bool StoreServer::Loop::reply(Connection& c, uint8_t status, std::string_view payload) {
  ++served_;
  const size_t queued = c.out.size() - c.out_sent;
  if (queued + 5 + payload.size() > options_.limits.max_output_bytes_per_connection) {
    // A client that does not read its replies: there is no room left even for an error.
    ++malformed_;
    close_connection(c);
    return false;
  }
  if (c.out_sent == c.out.size()) {
    c.out.clear();
    c.out_sent = 0;
  }
  c.out.push_back(static_cast<char>(status));
  put_u32(c.out, static_cast<uint32_t>(payload.size()));
  c.out.append(payload);
  return flush(c);
}

bool StoreServer::Loop::refuse(Connection& c, const std::string& why) {
  ++malformed_;
  // The first few, so rank 0's log says who connected with a wrong token or a foreign protocol;
  // a client that keeps trying must not flood it.
  constexpr uint64_t kLogged = 10;
  if (logged_errors_ < kLogged) {
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    char address[INET_ADDRSTRLEN] = {};
    std::string who = "a client that already hung up";
    if (::getpeername(c.fd.get(), reinterpret_cast<sockaddr*>(&peer), &length) == 0 &&
        ::inet_ntop(AF_INET, &peer.sin_addr, address, sizeof address))
      who = std::string(address) + ":" + std::to_string(ntohs(peer.sin_port));
    log_warn("rendezvous store: refused a request from ", who, " and closed its connection: ", why,
             ++logged_errors_ == kLogged ? " (later refusals are counted, not logged)" : "");
  }
  unpark(c);
  c.closing = true;
  c.in.clear();
  count_input(c);
  // Left to linger a moment for the reply to leave; a client that reads nothing loses it.
  set_deadline(c, Clock::now() + std::chrono::seconds(1));
  return reply(c, kError, why);
}

bool StoreServer::Loop::flush(Connection& c) {
  while (c.out_sent < c.out.size()) {
    const ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_connection(c);
      return false;
    }
    c.out_sent += static_cast<size_t>(n);
  }
  if (c.out_sent == c.out.size()) {
    c.out.clear();
    c.out_sent = 0;
    if (c.out.capacity() > (size_t{1} << 20)) c.out.shrink_to_fit();
    if (c.closing) half_close(c);
  } else if (c.out_sent > (size_t{1} << 20) && c.out_sent > c.out.size() / 2) {
    c.out.erase(0, c.out_sent);
    c.out_sent = 0;
  }
  watch(c);
  return true;
}

void StoreServer::Loop::half_close(Connection& c) {
  if (c.half_closed) return;
  // The FIN follows the error reply. Closing at once instead would answer whatever the client is
  // still sending with a reset, which can destroy the reply before the client reads it; reading
  // on (and discarding) until the client hangs up or the deadline passes lets it arrive.
  ::shutdown(c.fd.get(), SHUT_WR);
  c.half_closed = true;
}

void StoreServer::Loop::close_connection(Connection& c) {
  unpark(c);
  set_deadline(c, std::nullopt);
  buffered_input_ -= c.counted_input;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  connections_.erase(c.id);  // closes the socket
  open_ = connections_.size();
}

void StoreServer::Loop::wake(const std::string& key, const std::string& value) {
  auto node = parked_.extract(key);
  if (node.empty()) return;
  for (uint64_t id : node.mapped()) {
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& waiter = it->second;
    waiter.parked_key.reset();
    --parked_gets_;
    set_deadline(waiter, std::nullopt);
    if (reply(waiter, kOk, value)) runnable_.push_back(id);
  }
}

void StoreServer::Loop::unpark(Connection& c) {
  if (!c.parked_key) return;
  auto it = parked_.find(*c.parked_key);
  if (it != parked_.end()) {
    it->second.erase(c.id);
    if (it->second.empty()) parked_.erase(it);
  }
  c.parked_key.reset();
  --parked_gets_;
  set_deadline(c, std::nullopt);
}

void StoreServer::Loop::set_deadline(Connection& c, std::optional<Clock::time_point> deadline) {
  if (c.deadline) deadlines_.erase({*c.deadline, c.id});
  c.deadline = deadline;
  if (deadline) deadlines_.insert({*deadline, c.id});
}

void StoreServer::Loop::expire_deadlines() {
  const auto now = Clock::now();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const uint64_t id = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& c = it->second;
    c.deadline.reset();
    if (c.closing) {
      close_connection(c);
    } else if (c.parked_key) {
      unpark(c);
      if (reply(c, kNotFound, "")) runnable_.push_back(id);
    }
  }
}

void StoreServer::Loop::resume_runnable() {
  // Answering one connection's get can set nothing, but parsing what follows it can: loop until
  // no connection is left with parseable input.
  while (!runnable_.empty()) {
    std::vector<uint64_t> ready;
    ready.swap(runnable_);
    for (uint64_t id : ready) {
      auto it = connections_.find(id);
      if (it == connections_.end() || it->second.closing || it->second.parked_key) continue;
      try {
        process(it->second);
      } catch (const std::exception& error) {
        auto again = connections_.find(id);
        if (again != connections_.end()) close_connection(again->second);
        log_warn("rendezvous store: dropped a connection: ", error.what());
      }
    }
  }
}

void StoreServer::Loop::count_input(Connection& c) {
  const size_t now = c.in.capacity();
  buffered_input_ += now;
  buffered_input_ -= c.counted_input;
  c.counted_input = now;
}

void StoreServer::Loop::watch(Connection& c) {
  const bool want = c.out_sent < c.out.size();
  if (want == c.watching_output) return;
  epoll_event event{};
  event.events = want ? EPOLLIN | EPOLLOUT : EPOLLIN;
  event.data.u64 = c.id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &event) == 0) c.watching_output = want;
}

StoreServer::StoreServer(const std::string& host, int port, StoreOptions options) {
  const size_t descriptors = raise_descriptor_limit();
  StoreLimits& limits = options.limits;
  if (limits.max_connections == 0)
    limits.max_connections = descriptors > limits.fd_reserve ? descriptors - limits.fd_reserve : 1;
  OwnedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  TANDEM_CHECK(listener, "store socket: ", std::strerror(errno));
  int one = 1;
  ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address = resolve(host, port);
  // The backlog absorbs every rank of a large job connecting at once (the kernel caps it at
  // net.core.somaxconn).
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listener.get(), 4096) != 0) {
    const int error = errno;
    TANDEM_USER_CHECK(false, "cannot listen on ", host, ":", port,
                      " for the rendezvous store: ", std::strerror(error),
                      " (is MASTER_PORT free?)");
  }
  socklen_t length = sizeof address;
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  const size_t max_connections = limits.max_connections;
  loop_ = std::make_unique<Loop>(std::move(listener), std::move(options), max_connections);
}

StoreServer::~StoreServer() = default;

StoreStats StoreServer::stats() const {
  return loop_->stats();
}

// ---------------------------------------------------------------------------------------------
// Client

namespace {

enum class Io { kDone, kTimedOut, kClosed };

// Waits until fd is ready for events or the deadline passed.
Io wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, milliseconds_until(deadline));
    if (n > 0) return Io::kDone;  // errors and hang-ups show in the send or recv that follows
    if (n == 0) return Io::kTimedOut;
    if (errno != EINTR) return Io::kClosed;
  }
}

Io send_all(int fd, const char* data, size_t bytes, Clock::time_point deadline, int& error) {
  while (bytes > 0) {
    const ssize_t n = ::send(fd, data, bytes, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      bytes -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      error = errno;
      return Io::kClosed;
    }
    const Io ready = wait_ready(fd, POLLOUT, deadline);
    if (ready != Io::kDone) {
      error = errno;
      return ready;
    }
  }
  return Io::kDone;
}

Io recv_all(int fd, char* data, size_t bytes, Clock::time_point deadline, int& error) {
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, data, bytes, 0);
    if (n > 0) {
      data += n;
      bytes -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      error = 0;  // an orderly close by the server
      return Io::kClosed;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      error = errno;
      return Io::kClosed;
    }
    const Io ready = wait_ready(fd, POLLIN, deadline);
    if (ready != Io::kDone) {
      error = errno;
      return ready;
    }
  }
  return Io::kDone;
}

// One connection attempt, bounded by the deadline; why says what failed.
OwnedFd try_connect(const sockaddr_in& address, Clock::time_point deadline, std::string& why) {
  OwnedFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  TANDEM_CHECK(fd, "store socket: ", std::strerror(errno));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0)
    return fd;
  if (errno != EINPROGRESS && errno != EINTR) {
    why = std::strerror(errno);
    return {};
  }
  pollfd p{fd.get(), POLLOUT, 0};
  // At least a moment, so a short connect timeout still gets one real attempt.
  const int n = ::poll(&p, 1, std::max(milliseconds_until(deadline), 10));
  if (n <= 0) {
    why = n == 0 ? "connecting timed out" : std::strerror(errno);
    return {};
  }
  int error = 0;
  socklen_t length = sizeof error;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error != 0) {
    why = std::strerror(error);
    return {};
  }
  return fd;
}

constexpr uint32_t kMaxReplyBytes = uint32_t{1} << 30;

}  // namespace

StoreClient::StoreClient(const std::string& host, int port, StoreClientOptions options)
    : options_(std::move(options)), where_(host + ":" + std::to_string(port)) {
  const sockaddr_in address = resolve(host, port);
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(std::max(options_.connect_timeout_ms, 0));
  for (;;) {
    std::string why;
    fd_ = try_connect(address, deadline, why);
    if (fd_) break;
    TANDEM_USER_CHECK(Clock::now() < deadline, "cannot reach the rendezvous store at ", where_,
                      " within ", options_.connect_timeout_ms, " ms: ", why, " (is ",
                      options_.host_description,
                      " running, and are MASTER_ADDR/MASTER_PORT the same on every rank?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  set_no_delay(fd_.get());
  request('H', "", options_.token, 0);
}

StoreClient::StoreClient(const std::string& host, int port, int connect_timeout_ms)
    : StoreClient(host, port, [connect_timeout_ms] {
        StoreClientOptions options;
        options.connect_timeout_ms = connect_timeout_ms;
        return options;
      }()) {}

StoreClient::~StoreClient() = default;

void StoreClient::fail(const std::string& message) {
  fd_.reset();
  broken_ = message;
  throw StoreLost(message);
}

StoreClient::Reply StoreClient::request(char command, const std::string& key,
                                        const std::string& payload, int extra_timeout_ms) {
  std::lock_guard lock(mutex_);
  const std::string full_key = command == 'H' ? key : options_.key_prefix + key;
  const std::string& who = options_.host_description;
  const std::string store = "the rendezvous store at " + where_ + " (served by " + who + ")";
  if (!broken_.empty())
    throw StoreLost("not sent, since an earlier request on this connection failed: " + broken_);
  TANDEM_USER_CHECK(full_key.size() <= UINT32_MAX && payload.size() <= UINT32_MAX,
                    "store request too large: key of ", full_key.size(), " bytes, value of ",
                    payload.size(), " bytes");
  std::string frame;
  frame.reserve(kHeaderBytes + full_key.size() + payload.size());
  frame.push_back(command);
  put_u32(frame, static_cast<uint32_t>(full_key.size()));
  frame += full_key;
  put_u32(frame, static_cast<uint32_t>(payload.size()));
  frame += payload;

  const int64_t budget_ms =
      int64_t{std::max(options_.request_timeout_ms, 0)} + std::max(extra_timeout_ms, 0);
  const auto deadline = Clock::now() + std::chrono::milliseconds(budget_ms);
  const std::string what = command == 'H'
                               ? std::string("the hello")
                               : std::string(command == 'A' ? "an " : "a ") +
                                     command_name(command) + " of '" + printable(full_key) + "'";
  auto lost = [&](Io io, int error) {
    if (io == Io::kTimedOut) {
      std::ostringstream seconds;
      seconds.setf(std::ios::fixed);
      seconds.precision(1);
      seconds << static_cast<double>(budget_ms) / 1000;
      fail(store + " did not answer " + what + " within " + seconds.str() + " s: " + who +
           " is frozen, overloaded or gone");
    }
    // A server over its connection limit closes new connections at once, before the hello.
    const std::string why = error            ? std::strerror(error)
                            : command == 'H' ? "closed by the server, at its connection limit?"
                                             : "closed by the server";
    fail(store + " lost the connection during " + what + " (" + why + "): " + who +
         " has probably exited or crashed");
  };

  requests_.fetch_add(1, std::memory_order_relaxed);
  int error = 0;
  Io io = send_all(fd_.get(), frame.data(), frame.size(), deadline, error);
  if (io == Io::kTimedOut) lost(io, error);
  // A server that refused the request early (a value over its limit) may have closed before all
  // of it was sent, its error reply already here: read that rather than report a lost connection.
  const bool sent = io == Io::kDone;
  const int send_error = error;
  char header[5];
  io = recv_all(fd_.get(), header, sizeof header, deadline, error);
  if (io != Io::kDone) sent ? lost(io, error) : lost(Io::kClosed, send_error);
  if (!sent && header[0] != static_cast<char>(Status::kError)) lost(Io::kClosed, send_error);
  const auto status = static_cast<Status>(static_cast<unsigned char>(header[0]));
  const uint32_t bytes = get_u32(header + 1);
  const bool expected = status == Status::kOk || status == Status::kError ||
                        (status == Status::kNotFound && command == 'G');
  if (!expected || bytes > kMaxReplyBytes)
    fail(store + " answered " + what + " with a malformed reply (status " +
         std::to_string(static_cast<unsigned>(header[0] & 0xff)) + ", " + std::to_string(bytes) +
         " bytes): is something other than a tandem store listening there?");
  Reply reply{status, {}};
  // Grown as the bytes arrive, not by what the header claims.
  while (reply.payload.size() < bytes) {
    const size_t old = reply.payload.size();
    const size_t chunk = std::min<size_t>(bytes - old, size_t{1} << 20);
    reply.payload.resize(old + chunk);
    io = recv_all(fd_.get(), reply.payload.data() + old, chunk, deadline, error);
    if (io != Io::kDone) lost(io, error);
  }
  if (status == Status::kError) {
    // The server closes the connection after an error reply.
    fd_.reset();
    broken_ = store + " refused " + what + ": " + reply.payload;
    throw Error(broken_);
  }
  return reply;
}

void StoreClient::set(const std::string& key, const std::string& value) {
  request('S', key, value, 0);
}

std::optional<std::string> StoreClient::get(const std::string& key, int timeout_ms) {
  timeout_ms = std::max(timeout_ms, 0);
  Reply reply = request('G', key, std::to_string(timeout_ms), timeout_ms);
  if (reply.status == Status::kNotFound) return std::nullopt;
  return std::move(reply.payload);
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  const Reply reply = request('A', key, std::to_string(delta), 0);
  const auto value = parse_int64(reply.payload);
  if (!value) {
    std::lock_guard lock(mutex_);
    fail("the rendezvous store at " + where_ + " (served by " + options_.host_description +
         ") answered an add of '" + printable(options_.key_prefix + key) + "' with '" +
         printable(reply.payload) + "', not an integer");
  }
  return *value;
}

}  // namespace tandem::comm
