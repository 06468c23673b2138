// The per-rank HTTP endpoint: a bind probe that can say why a port is refused, then the Exposer.
#include "monitoring/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/exposer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "monitoring/thread_stack_floor.h"
#include "runtime/core/errors.h"
#include "runtime/core/owned_fd.h"

namespace tandem::monitoring {

namespace {

// Binds and listens on a socket of our own first: civetweb reports only "problem binding to
// port", while errno says whether the port is taken, the address foreign or the port privileged.
// The socket is closed before civetweb binds (a listening socket leaves no TIME_WAIT behind).
std::string why_not_bindable(const std::string& bind, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, bind.c_str(), &address.sin_addr) != 1)
    return "not an IPv4 address (monitoring.bind)";
  OwnedFd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (socket.get() < 0) return detail::concat("socket: ", std::strerror(errno));
  const int on = 1;
  ::setsockopt(socket.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(socket.get(), 1) != 0) {
    const int error = errno;
    if (error == EADDRINUSE) return "the port is in use by another process";
    if (error == EADDRNOTAVAIL) return "not an address of this machine (monitoring.bind)";
    if (error == EACCES) return "ports below 1024 need privileges";
    return std::strerror(error);
  }
  return "";
}

}  // namespace

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

MetricsServer::MetricsServer(const std::string& bind, int port) {
  const std::string address = detail::concat(bind, ":", port);
  const auto refuse = [&](const std::string& why) {
    throw UsageError(detail::concat(
        "monitoring.metrics_port: cannot serve metrics on ", address, ": ", why,
        "; choose another monitoring.metrics_port (each rank uses it plus its LOCAL_RANK), or 0 "
        "to turn metrics off"));
  };
  if (const std::string why = why_not_bindable(bind, port); !why.empty()) refuse(why);
  // civetweb asks for 100 KiB thread stacks; the floor must be linked in to give them room.
  TANDEM_CHECK(thread_stack_bytes(100 * 1024) == kThreadStackFloorBytes);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& error) {
    refuse(error.what());  // taken between the probe and civetweb's bind, most likely
  }
  endpoint_ = bind == "0.0.0.0" ? detail::concat(host_name(), ":", port) : address;
  wake_address_.sin_family = AF_INET;
  wake_address_.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, bind == "0.0.0.0" ? "127.0.0.1" : bind.c_str(), &wake_address_.sin_addr);
}

MetricsServer::~MetricsServer() {
  // civetweb's listening thread looks at its stop flag only between polls of up to 2 s, so a
  // plain stop takes up to 2 s (a finished run would wait that long to exit); connections of our
  // own while the Exposer stops end the poll at once.
  std::atomic<bool> stopped = false;
  std::thread waker([&] {
    while (!stopped.load()) {
      OwnedFd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (socket.get() >= 0)
        ::connect(socket.get(), reinterpret_cast<const sockaddr*>(&wake_address_),
                  sizeof wake_address_);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  exposer_.reset();
  stopped = true;
  waker.join();
}

void MetricsServer::serve(const RankMetrics& metrics) {
  TANDEM_CHECK(!serving_, "MetricsServer::serve is called once");
  serving_ = true;
  exposer_->RegisterCollectable(scrape_source(metrics));
}

}  // namespace tandem::monitoring
