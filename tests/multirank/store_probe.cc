// A hostile client of a running job's rendezvous store: garbage, huge length prefixes,
// non-numeric numbers, requests without the job's token, 1,100 connect/close cycles and 2,000
// idle connections, all against 127.0.0.1:PORT only, each phase bounded in count and time. It
// checks what the store must do (refuse, close, stay up) and how much memory the serving process
// grew meanwhile (its VmRSS, read from /proc/PID/status).
//   store_probe PORT SERVER_PID
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/store.h"

namespace {

using tandem::OwnedFd;

int port = 0;
int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("store_probe: %s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  std::fflush(stdout);
  failures += ok ? 0 : 1;
}

OwnedFd connect_raw() {
  OwnedFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd.get() < 0 ||
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    return OwnedFd();
  return fd;
}

void send_bytes(int fd, const std::string& bytes) {
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
}

std::string frame(char command, const std::string& key, const std::string& payload) {
  std::string out(1, command);
  for (const std::string* part : {&key, &payload}) {
    const uint32_t n = static_cast<uint32_t>(part->size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out += *part;
  }
  return out;
}

// Reads until EOF or `timeout_ms`; returns what arrived and whether the peer closed.
std::pair<std::string, bool> read_until_closed(int fd, int timeout_ms) {
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return {got, false};
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return {got, true};
    got.append(buffer, static_cast<size_t>(n));
  }
}

long rss_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: store_probe PORT SERVER_PID\n");
    return 2;
  }
  port = std::atoi(argv[1]);
  const int server_pid = std::atoi(argv[2]);
  const long rss_before = rss_kib(server_pid);
  long rss_peak = rss_before;
  auto sample = [&] { rss_peak = std::max(rss_peak, rss_kib(server_pid)); };

  // Garbage of several kinds: each connection gets an error or is closed within a second.
  const std::vector<std::string> garbage = {"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                            "SSH-2.0-OpenSSH_9.2\r\n", std::string(64, '\xff'),
                                            frame('Q', "k", "v")};
  int closed = 0;
  for (int round = 0; round < 10; ++round)
    for (const std::string& bytes : garbage) {
      OwnedFd fd = connect_raw();
      send_bytes(fd.get(), bytes);
      closed += read_until_closed(fd.get(), 1000).second ? 1 : 0;
    }
  check(closed == 40, std::to_string(closed) + " of 40 garbage connections closed by the store");

  // Non-numeric numbers, without and with a hello: an error reply (status 2) or a closed
  // connection, never a dead server.
  int refused = 0;
  for (const std::string& request : {frame('A', "tandem/x", "one"), frame('G', "tandem/x", "soon"),
                                     frame('H', "", "") + frame('A', "tandem/x", "1e999"),
                                     frame('H', "", "") + frame('G', "tandem/x", "-")}) {
    OwnedFd fd = connect_raw();
    send_bytes(fd.get(), request);
    const auto [reply, eof] = read_until_closed(fd.get(), 1000);
    refused += (eof && (reply.empty() || reply[0] == 2)) ? 1 : 0;
  }
  check(refused == 4, std::to_string(refused) + " of 4 non-numeric requests refused");

  // Without the job's token nothing is stored or read.
  {
    OwnedFd fd = connect_raw();
    send_bytes(fd.get(), frame('H', "", "wrong-token") + frame('S', "tandem/planted", "x"));
    const auto [reply, eof] = read_until_closed(fd.get(), 1000);
    check(eof && !reply.empty() && reply[0] == 2 &&
              reply.find("TANDEM_STORE_TOKEN") != std::string::npos,
          "a client with the wrong token is refused, naming TANDEM_STORE_TOKEN");
  }

  // Eight bare 64 MiB length prefixes, held open: the server must not reserve what they claim.
  {
    std::vector<OwnedFd> claims;
    for (int i = 0; i < 8; ++i) {
      claims.push_back(connect_raw());
      const uint32_t huge = 64u << 20;
      std::string bytes = frame('H', "", "");
      bytes += 'S';
      bytes.append(reinterpret_cast<const char*>(&huge), 4);
      send_bytes(claims.back().get(), bytes);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    sample();
  }
  check(rss_peak - rss_before < 64 * 1024,
        "8 claimed 64 MiB requests grew the serving process by " +
            std::to_string((rss_peak - rss_before) / 1024) + " MiB (< 64)");

  // Churn: 1,100 connect/close cycles.
  int connected = 0;
  for (int i = 0; i < 1100; ++i) connected += connect_raw().get() >= 0 ? 1 : 0;
  check(connected == 1100, std::to_string(connected) + " of 1100 connect/close cycles connected");

  // 2,000 idle connections at once, held for two seconds while the job trains on.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2100 && limit.rlim_max >= 2100) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 4096);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  {
    std::vector<OwnedFd> idle;
    for (int i = 0; i < 2000; ++i) {
      OwnedFd fd = connect_raw();
      if (fd.get() < 0) break;
      idle.push_back(std::move(fd));
    }
    check(idle.size() == 2000, std::to_string(idle.size()) + " of 2000 idle connections open");
    std::this_thread::sleep_for(std::chrono::seconds(2));
    sample();
    // The store still answers a proper client meanwhile (a real job's ranks would be one).
    tandem::comm::StoreClientOptions options;
    options.connect_timeout_ms = 2000;
    options.request_timeout_ms = 2000;
    options.token = std::getenv("TANDEM_STORE_TOKEN") ? std::getenv("TANDEM_STORE_TOKEN") : "";
    options.key_prefix = "probe/";
    try {
      tandem::comm::StoreClient client("127.0.0.1", port, options);
      client.set("alive", "yes");
      check(client.get("alive", 100) == std::optional<std::string>("yes"),
            "with 2000 idle connections open, a client with the token is still served");
    } catch (const std::exception& error) {
      check(false, std::string("a client with the token is served: ") + error.what());
    }
  }
  check(rss_peak - rss_before < 96 * 1024, "the serving process grew by " +
                                               std::to_string((rss_peak - rss_before) / 1024) +
                                               " MiB in all (< 96)");
  std::printf("store_probe: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
