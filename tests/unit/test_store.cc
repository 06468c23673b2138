// The rendezvous store against well-behaved, hostile and crowded clients, and its client against
// servers that freeze or vanish. Every test serves on 127.0.0.1 in this process; raw sockets stand
// in for clients (and servers) that do not follow the protocol.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/faults.h"
#include "comm/store.h"
#include "tests/unit/error_text.h"

namespace tandem::comm {
namespace {

using Clock = std::chrono::steady_clock;
using testing::error_of;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

sockaddr_in loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

// A blocking socket connected to 127.0.0.1:port, speaking whatever the test writes.
OwnedFd connect_raw(int port) {
  OwnedFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  const sockaddr_in address = loopback(port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
    throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
  return fd;
}

std::string u32(uint32_t value) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return out;
}

std::string frame(char command, std::string_view key, std::string_view payload) {
  return std::string(1, command) + u32(static_cast<uint32_t>(key.size())) + std::string(key) +
         u32(static_cast<uint32_t>(payload.size())) + std::string(payload);
}

void send_raw(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

struct Received {
  std::string bytes;
  bool closed = false;  // EOF or reset within the time given
};

// Reads until the server closes the connection or timeout_ms pass.
Received read_until_closed(int fd, int timeout_ms) {
  Received received;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  char buffer[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return received;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      received.closed = true;
      return received;
    }
    received.bytes.append(buffer, static_cast<size_t>(n));
  }
}

struct RawReply {
  int status = -1;
  std::string payload;
};

// The first reply in bytes, if a whole one is there.
RawReply first_reply(const std::string& bytes) {
  RawReply reply;
  if (bytes.size() < 5) return reply;
  uint32_t length = 0;
  for (int i = 3; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(bytes[1 + i]);
  if (bytes.size() < 5 + length) return reply;
  reply.status = static_cast<unsigned char>(bytes[0]);
  reply.payload = bytes.substr(5, length);
  return reply;
}

bool eventually(const std::function<bool()>& condition, int timeout_ms = 2000) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

StoreClientOptions quick(std::string token = "", std::string prefix = "") {
  StoreClientOptions options;
  options.connect_timeout_ms = 2000;
  options.request_timeout_ms = 2000;
  options.token = std::move(token);
  options.key_prefix = std::move(prefix);
  return options;
}

size_t open_descriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

TEST(StoreBasics, SetGetAddRoundTrip) {
  StoreServer server("127.0.0.1", 0);
  StoreClient a("127.0.0.1", server.port(), quick()), b("127.0.0.1", server.port(), quick());
  EXPECT_EQ(a.where(), "127.0.0.1:" + std::to_string(server.port()));
  a.set("k", "v");
  EXPECT_EQ(b.get("k", 100), "v");
  a.set("k", "v2");  // overwrite
  EXPECT_EQ(b.get("k", 0), "v2");
  const std::string binary("a\0b\xff", 4);
  a.set("binary", binary);
  EXPECT_EQ(b.get("binary", 0), binary);
  a.set("empty", "");
  EXPECT_EQ(b.get("empty", 0), "");
  EXPECT_FALSE(b.get("missing", 0).has_value());
  EXPECT_EQ(a.add("n", 2), 2);
  EXPECT_EQ(b.add("n", -5), -3);
  EXPECT_EQ(a.get("n", 0), "-3");
  // The hello and the requests above.
  EXPECT_EQ(a.requests(), 1u + 6u);
  const StoreStats stats = server.stats();
  EXPECT_EQ(stats.open_connections, 2u);
  EXPECT_EQ(stats.malformed_requests, 0u);
  EXPECT_EQ(stats.stored_bytes, std::string("kv2binaryemptyn-3").size() + binary.size());
}

TEST(StoreBasics, GetWaitsForALaterSetAndTimesOutOtherwise) {
  StoreServer server("127.0.0.1", 0);
  StoreClient a("127.0.0.1", server.port(), quick()), b("127.0.0.1", server.port(), quick());
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    a.set("late", "here");
  });
  auto start = Clock::now();
  EXPECT_EQ(b.get("late", 5000), "here");
  EXPECT_LT(seconds_since(start), 2.0);
  setter.join();

  start = Clock::now();
  EXPECT_FALSE(b.get("never", 200).has_value());
  const double waited = seconds_since(start);
  EXPECT_GE(waited, 0.19);
  EXPECT_LT(waited, 1.5);

  // A parked get holds no one else up: the server has one thread for every connection.
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = b.get("later", 3000).has_value(); });
  ASSERT_TRUE(eventually([&] { return server.stats().parked_gets == 1; }));
  start = Clock::now();
  for (int i = 0; i < 20; ++i) a.set("busy" + std::to_string(i), "x");
  EXPECT_LT(seconds_since(start), 1.0);
  a.add("later", 1);  // an add creates the key too, and answers the waiting get
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(server.stats().parked_gets, 0u);
}

TEST(StoreHostile, NonNumericDeltaOrTimeoutIsAnErrorAndOthersAreStillServed) {
  StoreServer server("127.0.0.1", 0);
  StoreClient good("127.0.0.1", server.port(), quick());
  good.set("n", "1");
  for (const auto& [request, named] :
       {std::pair{frame('A', "n", "abc"), "delta"}, std::pair{frame('A', "n", "1x"), "delta"},
        std::pair{frame('A', "n", ""), "delta"}, std::pair{frame('G', "n", "soon"), "timeout"},
        std::pair{frame('G', "n", "-1"), "timeout"}}) {
    OwnedFd raw = connect_raw(server.port());
    send_raw(raw.get(), frame('H', "", "") + request);
    const Received received = read_until_closed(raw.get(), 1000);
    EXPECT_TRUE(received.closed);
    // The hello's ok, then the error.
    const RawReply hello = first_reply(received.bytes);
    EXPECT_EQ(hello.status, 1);
    const RawReply error = first_reply(received.bytes.substr(5));
    EXPECT_EQ(error.status, 2);
    EXPECT_NE(error.payload.find(named), std::string::npos) << error.payload;
  }
  // An add to a value that is not a number: refused, and that client is done.
  StoreClient bad("127.0.0.1", server.port(), quick());
  good.set("text", "hello");
  const std::string message = error_of([&] { bad.add("text", 1); });
  EXPECT_NE(message.find("is not a decimal int64"), std::string::npos) << message;
  EXPECT_THROW(bad.get("n", 0), StoreLost);
  EXPECT_EQ(good.add("n", 41), 42);
  EXPECT_EQ(good.get("text", 0), "hello");
  EXPECT_EQ(server.stats().malformed_requests, 6u);
}

TEST(StoreHostile, HugeLengthPrefixesAllocateNothing) {
  StoreServer server("127.0.0.1", 0);
  const size_t rss_before = resident_bytes();
  // Claims over the limits are refused at once, before any data.
  for (const std::string& claim :
       {std::string("S") + u32(1) + "k" + u32(64u << 20), std::string("S") + u32(0xffffffffu),
        std::string("S") + u32(1) + "k" + u32(0xffffffffu),
        std::string("G") + u32(0) + u32(64u << 20)}) {
    OwnedFd raw = connect_raw(server.port());
    send_raw(raw.get(), claim);
    const Received received = read_until_closed(raw.get(), 1000);
    EXPECT_TRUE(received.closed);
    const RawReply reply = first_reply(received.bytes);
    EXPECT_EQ(reply.status, 2);
    EXPECT_NE(reply.payload.find("over the store's limit"), std::string::npos) << reply.payload;
  }
  // A claim within the limit waits for its data, but holds no memory it has not received.
  std::vector<OwnedFd> claims;
  for (int i = 0; i < 8; ++i) {
    claims.push_back(connect_raw(server.port()));
    send_raw(claims.back().get(), std::string("S") + u32(1) + "k" + u32(16u << 20) + "abc");
  }
  ASSERT_TRUE(eventually([&] { return server.stats().open_connections == 8; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LT(server.stats().buffered_input_bytes, size_t{1} << 20);
  // 8 x 16 MiB were claimed; a process that believed them would have grown by 128 MiB.
  EXPECT_LT(resident_bytes(), rss_before + (size_t{32} << 20));
  EXPECT_EQ(server.stats().stored_bytes, 0u);
  claims.clear();
  EXPECT_TRUE(eventually([&] { return server.stats().open_connections == 0; }));
  EXPECT_EQ(server.stats().buffered_input_bytes, 0u);
  StoreClient good("127.0.0.1", server.port(), quick());
  good.set("k", "v");
  EXPECT_EQ(good.get("k", 0), "v");
}

TEST(StoreHostile, GarbageBytesCloseTheConnection) {
  StoreServer server("127.0.0.1", 0);
  for (const std::string& garbage :
       {std::string("GET / HTTP/1.1\r\nHost: store\r\n\r\n"), std::string("\xff\xfe garbage"),
        std::string("SSH-2.0-OpenSSH_9.2\r\n"), std::string("H") + u32(3) + "key" + u32(0)}) {
    OwnedFd raw = connect_raw(server.port());
    send_raw(raw.get(), garbage);
    const auto start = Clock::now();
    const Received received = read_until_closed(raw.get(), 1000);
    EXPECT_TRUE(received.closed) << "still open after " << garbage;
    EXPECT_LT(seconds_since(start), 1.0);
    EXPECT_EQ(first_reply(received.bytes).status, 2);
  }
  EXPECT_TRUE(eventually([&] { return server.stats().open_connections == 0; }));
  EXPECT_EQ(server.stats().malformed_requests, 4u);
  StoreClient good("127.0.0.1", server.port(), quick());
  EXPECT_EQ(good.add("n", 1), 1);
}

TEST(StoreHostile, RandomBytesNeverStopTheServer) {
  StoreServer server("127.0.0.1", 0);
  StoreClient good("127.0.0.1", server.port(), quick());
  std::mt19937 random(20240607);
  for (int i = 0; i < 300; ++i) {
    std::string bytes = i % 2 ? frame('H', "", "") : std::string();
    const size_t length = 1 + random() % 200;
    // Biased toward command bytes and small numbers, so parsing gets past the first byte.
    static const char kAlphabet[] =
        "HSGA\x00\x01\x02\x04\x7f\xff"
        "0123456789-";
    const std::string_view alphabet(kAlphabet, sizeof kAlphabet - 1);
    for (size_t j = 0; j < length; ++j)
      bytes.push_back(j % 3 ? static_cast<char>(random()) : alphabet[random() % alphabet.size()]);
    OwnedFd raw = connect_raw(server.port());
    send_raw(raw.get(), bytes);
    if (i % 10 == 0) read_until_closed(raw.get(), 20);
    if (i % 50 == 0) {
      EXPECT_EQ(good.add("alive", 1), i / 50 + 1);
    }
  }
  EXPECT_TRUE(eventually([&] { return server.stats().open_connections == 1; }, 3000))
      << server.stats().open_connections;
  EXPECT_GT(server.stats().malformed_requests, 0u);
  good.set("k", "v");
  EXPECT_EQ(good.get("k", 0), "v");
}

TEST(StoreScale, ConnectCloseChurnLeaksNothing) {
  StoreServer server("127.0.0.1", 0);
  const size_t descriptors_before = open_descriptors();
  for (int i = 0; i < 1100; ++i) connect_raw(server.port());  // closed at once
  for (int i = 0; i < 50; ++i) {
    StoreClient client("127.0.0.1", server.port(), quick());
    client.set("churn", std::to_string(i));
  }
  ASSERT_TRUE(eventually([&] { return server.stats().open_connections == 0; }));
  EXPECT_EQ(open_descriptors(), descriptors_before);
  const StoreStats stats = server.stats();
  EXPECT_EQ(stats.accepted_connections, 1150u);
  EXPECT_EQ(stats.refused_connections, 0u);
  StoreClient client("127.0.0.1", server.port(), quick());
  EXPECT_EQ(client.get("churn", 0), "49");
  EXPECT_EQ(client.add("n", 7), 7);
}

TEST(StoreScale, TwoThousandIdleConnectionsAndStillServing) {
  constexpr int kIdle = 2000;
  // Both ends of every connection live in this process.
  constexpr rlim_t kNeeded = 2 * kIdle + 64;
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max < kNeeded)
    GTEST_SKIP() << "the descriptor hard limit is " << limit.rlim_max << ", under the " << kNeeded
                 << " that " << kIdle << " connections take in one process";
  if (limit.rlim_cur < kNeeded) {
    limit.rlim_cur = limit.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0) << std::strerror(errno);
  }
  StoreServer server("127.0.0.1", 0);
  std::vector<OwnedFd> idle;
  idle.reserve(kIdle);
  for (int i = 0; i < kIdle; ++i) idle.push_back(connect_raw(server.port()));
  ASSERT_TRUE(eventually([&] { return server.stats().open_connections == kIdle; }, 5000))
      << server.stats().open_connections;
  StoreClient client("127.0.0.1", server.port(), quick());
  const auto start = Clock::now();
  for (int i = 0; i < 100; ++i) {
    client.set(std::to_string(i), "v");
    EXPECT_EQ(client.add("n", 1), i + 1);
  }
  EXPECT_LT(seconds_since(start), 2.0);
  // The idle ones can still speak, the last one accepted included.
  send_raw(idle.back().get(), frame('H', "", "") + frame('G', "n", "0"));
  char reply[5 + 3 + 5];
  ASSERT_EQ(::recv(idle.back().get(), reply, sizeof reply, MSG_WAITALL),
            static_cast<ssize_t>(sizeof reply));
  EXPECT_EQ(first_reply(std::string(reply + 5, 8)).payload, "100");
  EXPECT_EQ(server.stats().refused_connections, 0u);
  idle.clear();
  EXPECT_TRUE(eventually([&] { return server.stats().open_connections == 1; }, 5000));
}

TEST(StoreScale, OverTheConnectionLimitIsClosedAtOnce) {
  StoreOptions options;
  options.limits.max_connections = 3;
  StoreServer server("127.0.0.1", 0, options);
  std::vector<OwnedFd> held;
  for (int i = 0; i < 3; ++i) held.push_back(connect_raw(server.port()));
  ASSERT_TRUE(eventually([&] { return server.stats().open_connections == 3; }));
  OwnedFd extra = connect_raw(server.port());
  EXPECT_TRUE(read_until_closed(extra.get(), 1000).closed);
  EXPECT_EQ(server.stats().refused_connections, 1u);
  held.pop_back();
  ASSERT_TRUE(eventually([&] { return server.stats().open_connections == 2; }));
  StoreClient client("127.0.0.1", server.port(), quick());
  EXPECT_EQ(client.add("n", 1), 1);
}

TEST(StoreScale, SizeLimitsRefuseOnlyTheOffendingClient) {
  StoreOptions options;
  options.limits.max_key_bytes = 16;
  options.limits.max_value_bytes = 1 << 20;
  options.limits.max_stored_bytes = (1 << 20) + 100;
  options.limits.max_output_bytes_per_connection = 2 << 20;
  StoreServer server("127.0.0.1", 0, options);
  StoreClient good("127.0.0.1", server.port(), quick());
  {
    StoreClient client("127.0.0.1", server.port(), quick());
    EXPECT_NE(
        error_of([&] { client.set(std::string(17, 'k'), "v"); }).find("over the store's limit"),
        std::string::npos);
  }
  {
    StoreClient client("127.0.0.1", server.port(), quick());
    EXPECT_NE(error_of([&] {
                client.set("k", std::string((1 << 20) + 1, 'v'));
              }).find("over the store's limit of 1048576"),
              std::string::npos);
  }
  good.set("big", std::string(1 << 20, 'v'));
  {
    StoreClient client("127.0.0.1", server.port(), quick());
    EXPECT_NE(error_of([&] { client.set("more", std::string(200, 'v')); }).find("store is full"),
              std::string::npos);
  }
  // A client that asks for the big value again and again and never reads a reply: cut off once
  // its replies pass 2 MiB (after the kernel's socket buffers fill).
  OwnedFd greedy = connect_raw(server.port());
  std::string requests;
  for (int i = 0; i < 64; ++i) requests += frame('G', "big", "0");
  send_raw(greedy.get(), requests);
  EXPECT_TRUE(eventually([&] { return server.stats().open_connections == 1; }));
  EXPECT_EQ(good.get("big", 0)->size(), size_t{1} << 20);
  EXPECT_EQ(server.stats().stored_bytes, 3u + (1u << 20));
}

TEST(StoreToken, WrongTokenIsRefusedNamingTheVariableRightTokenWorks) {
  StoreOptions options;
  options.token = "s3cret";
  StoreServer server("127.0.0.1", 0, options);
  for (const std::string& token : {std::string("wrong"), std::string(""), std::string("s3cret!")}) {
    bool lost = false;
    const std::string message = error_of([&] {
      try {
        StoreClient client("127.0.0.1", server.port(), quick(token));
      } catch (const StoreLost&) {
        lost = true;  // a refusal is a configuration error, not a fault worth a restart
        throw;
      }
    });
    EXPECT_FALSE(lost);
    EXPECT_NE(message.find("TANDEM_STORE_TOKEN"), std::string::npos) << message;
  }
  // Anything before the hello is refused too.
  OwnedFd raw = connect_raw(server.port());
  send_raw(raw.get(), frame('S', "k", "v"));
  const Received received = read_until_closed(raw.get(), 1000);
  EXPECT_TRUE(received.closed);
  EXPECT_NE(first_reply(received.bytes).payload.find("TANDEM_STORE_TOKEN"), std::string::npos);

  StoreClient client("127.0.0.1", server.port(), quick("s3cret"));
  client.set("k", "v");
  EXPECT_EQ(client.get("k", 0), "v");
  EXPECT_EQ(server.stats().stored_bytes, 2u);  // the refused set stored nothing
  EXPECT_EQ(server.stats().malformed_requests, 4u);
}

TEST(StoreClientOptions, KeyPrefixNamespacesKeys) {
  StoreServer server("127.0.0.1", 0);
  StoreClient job1("127.0.0.1", server.port(), quick("", "job1/"));
  StoreClient job2("127.0.0.1", server.port(), quick("", "job2/"));
  StoreClient plain("127.0.0.1", server.port(), quick());
  job1.set("k", "one");
  EXPECT_FALSE(job2.get("k", 50).has_value());
  job2.set("k", "two");
  EXPECT_EQ(job1.get("k", 0), "one");
  EXPECT_EQ(job2.get("k", 0), "two");
  EXPECT_EQ(plain.get("job1/k", 0), "one");
  EXPECT_EQ(job1.add("n", 1), 1);
  EXPECT_EQ(job2.add("n", 5), 5);
}

// A listener that the kernel completes connections for but nobody ever reads.
struct SilentServer {
  OwnedFd listener{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  int port = 0;
  SilentServer() {
    sockaddr_in address = loopback(0);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener.get(), 16) != 0)
      throw std::runtime_error(std::string("silent server: ") + std::strerror(errno));
    socklen_t length = sizeof address;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
  }
};

TEST(StoreDeadline, ASilentServerFailsTheRequestInTime) {
  SilentServer silent;
  StoreClientOptions options = quick();
  options.request_timeout_ms = 500;
  options.host_description = "rank 0 (the test's silent listener)";
  const auto start = Clock::now();
  std::string message;
  try {
    StoreClient client("127.0.0.1", silent.port, options);
    ADD_FAILURE() << "the hello to a silent server succeeded";
  } catch (const StoreLost& error) {
    message = error.what();
  }
  const double waited = seconds_since(start);
  EXPECT_GE(waited, 0.45);
  EXPECT_LT(waited, 1.5);
  EXPECT_NE(message.find("did not answer the hello within 0.5 s"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0 (the test's silent listener) is frozen"), std::string::npos)
      << message;
}

// Answers the hello of one client, then goes quiet (a frozen rank 0) or, with hang_up, closes.
struct HelloThenQuiet {
  SilentServer socket;
  std::atomic<bool> done{false};
  std::thread thread;
  explicit HelloThenQuiet(bool hang_up) {
    thread = std::thread([this, hang_up] {
      pollfd p{socket.listener.get(), POLLIN, 0};
      if (::poll(&p, 1, 5000) != 1) return;  // the test failed before connecting
      OwnedFd client(::accept(socket.listener.get(), nullptr, nullptr));
      char hello[9];
      if (!client || ::recv(client.get(), hello, sizeof hello, MSG_WAITALL) != sizeof hello) return;
      send_raw(client.get(), std::string("\x01") + u32(0));
      if (hang_up) return;
      while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
  }
  ~HelloThenQuiet() {
    done = true;
    thread.join();
  }
};

TEST(StoreDeadline, AFrozenServerFailsEachRequestInTimeAndLaterOnesAtOnce) {
  HelloThenQuiet frozen(false);
  StoreClientOptions options = quick();
  options.request_timeout_ms = 500;
  options.host_description = "rank 0 (frozen)";
  StoreClient client("127.0.0.1", frozen.socket.port, options);
  auto start = Clock::now();
  std::string message;
  try {
    client.get("tandem/x", 300);  // its deadline is 300 + 500 ms
  } catch (const StoreLost& error) {
    message = error.what();
  }
  double waited = seconds_since(start);
  EXPECT_GE(waited, 0.75);
  EXPECT_LT(waited, 1.8);
  EXPECT_NE(message.find("the rendezvous store at 127.0.0.1:" + std::to_string(frozen.socket.port) +
                         " (served by rank 0 (frozen)) did not answer a get of 'tandem/x' "
                         "within 0.8 s: rank 0 (frozen) is frozen, overloaded or gone"),
            std::string::npos)
      << message;
  start = Clock::now();
  EXPECT_THROW(client.set("y", "z"), StoreLost);
  EXPECT_LT(seconds_since(start), 0.1);
}

TEST(StoreDeadline, AServerThatHangsUpIsALostConnection) {
  HelloThenQuiet gone(true);
  StoreClient client("127.0.0.1", gone.socket.port, quick());
  const std::string message = error_of([&] { client.set("tandem/x", "1"); });
  EXPECT_NE(message.find("lost the connection during a set of 'tandem/x'"), std::string::npos)
      << message;
}

TEST(StoreServerShutdown, DestructorAnswersNoOneAndClosesEverything) {
  const size_t descriptors_before = open_descriptors();
  auto server = std::make_unique<StoreServer>("127.0.0.1", 0);
  StoreClient client("127.0.0.1", server->port(), quick());
  std::vector<OwnedFd> idle;
  for (int i = 0; i < 10; ++i) idle.push_back(connect_raw(server->port()));
  std::string message;
  std::thread waiter([&] { message = error_of([&] { client.get("never", 5000); }); });
  ASSERT_TRUE(eventually([&] { return server->stats().parked_gets == 1; }));
  const auto start = Clock::now();
  server.reset();
  waiter.join();
  EXPECT_LT(seconds_since(start), 1.0);
  EXPECT_NE(message.find("lost the connection"), std::string::npos) << message;
  for (const OwnedFd& fd : idle) EXPECT_TRUE(read_until_closed(fd.get(), 1000).closed);
  idle.clear();
  EXPECT_EQ(open_descriptors(), descriptors_before);  // the failed client closed its socket too
}

}  // namespace
}  // namespace tandem::comm
