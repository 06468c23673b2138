// TCP key-value store: length-prefixed requests ('S'et, 'G'et with timeout, 'A'dd), one thread
// per client connection on the server.
#include "comm/store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "runtime/core/errors.h"

namespace tandem::comm {

namespace {

bool write_all(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

bool write_string(int fd, const std::string& s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  return write_all(fd, &n, 4) && write_all(fd, s.data(), n);
}

bool read_string(int fd, std::string& s) {
  uint32_t n = 0;
  if (!read_all(fd, &n, 4) || n > (64u << 20)) return false;
  s.resize(n);
  return read_all(fd, s.data(), n);
}

sockaddr_in resolve(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &result);
  TANDEM_USER_CHECK(status == 0 && result, "cannot resolve store host '", host,
                    "': ", gai_strerror(status));
  sockaddr_in address = *reinterpret_cast<sockaddr_in*>(result->ai_addr);
  ::freeaddrinfo(result);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

}  // namespace

StoreServer::StoreServer(const std::string& host, int port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  TANDEM_CHECK(listen_fd_ >= 0, "store socket: ", std::strerror(errno));
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address = resolve(host, port);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd_, 1024) != 0) {
    const int error = errno;
    ::close(listen_fd_);
    TANDEM_USER_CHECK(false, "cannot listen on ", host, ":", port,
                      " for the rendezvous store: ", std::strerror(error),
                      " (is MASTER_PORT free?)");
  }
  socklen_t length = sizeof address;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

StoreServer::~StoreServer() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
    changed_.notify_all();
  }
  for (auto& thread : threads_) thread.join();
  for (int fd : client_fds_) ::close(fd);
}

void StoreServer::accept_loop() {
  while (!stopping_) {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;  // closed
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard lock(mutex_);
    client_fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void StoreServer::serve(int fd) {
  for (;;) {
    char command = 0;
    std::string key, payload;
    if (!read_all(fd, &command, 1) || !read_string(fd, key) || !read_string(fd, payload)) return;
    std::string reply;
    char found = 1;
    std::unique_lock lock(mutex_);
    if (command == 'S') {
      values_[key] = payload;
      changed_.notify_all();
    } else if (command == 'G') {
      const int timeout_ms = std::stoi(payload);
      const bool present = changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                             [&] { return stopping_ || values_.count(key) > 0; });
      if (present && values_.count(key)) {
        reply = values_[key];
      } else {
        found = 0;
      }
    } else if (command == 'A') {
      auto& slot = values_[key];
      const int64_t value = (slot.empty() ? 0 : std::stoll(slot)) + std::stoll(payload);
      slot = std::to_string(value);
      reply = slot;
      changed_.notify_all();
    } else {
      return;  // protocol error: drop the client
    }
    lock.unlock();
    if (!write_all(fd, &found, 1) || !write_string(fd, reply)) return;
  }
}

StoreClient::StoreClient(const std::string& host, int port, int connect_timeout_ms)
    : where_(host + ":" + std::to_string(port)) {
  const sockaddr_in address = resolve(host, port);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(connect_timeout_ms);
  int error = 0;
  for (;;) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    TANDEM_CHECK(fd_ >= 0, "store socket: ", std::strerror(errno));
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) break;
    error = errno;
    ::close(fd_);
    fd_ = -1;
    TANDEM_USER_CHECK(
        std::chrono::steady_clock::now() < deadline, "cannot reach the rendezvous store at ",
        where_, " within ", connect_timeout_ms, " ms: ", std::strerror(error),
        " (is rank 0 running, and are MASTER_ADDR/MASTER_PORT the same on every rank?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

StoreClient::~StoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

std::string StoreClient::request(char command, const std::string& key, const std::string& payload) {
  std::lock_guard lock(mutex_);
  char found = 0;
  std::string reply;
  TANDEM_CHECK(write_all(fd_, &command, 1) && write_string(fd_, key) &&
                   write_string(fd_, payload) && read_all(fd_, &found, 1) &&
                   read_string(fd_, reply),
               "lost the connection to the rendezvous store at ", where_);
  if (!found) throw std::out_of_range(key);
  return reply;
}

void StoreClient::set(const std::string& key, const std::string& value) {
  request('S', key, value);
}

std::optional<std::string> StoreClient::get(const std::string& key, int timeout_ms) {
  try {
    return request('G', key, std::to_string(timeout_ms));
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  return std::stoll(request('A', key, std::to_string(delta)));
}

}  // namespace tandem::comm
