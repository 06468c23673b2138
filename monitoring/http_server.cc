// HttpServer: a bind probe that can say why a port is refused, then civetweb with one request
// handler per route.
#include "monitoring/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
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
#include "runtime/core/host_name.h"
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

void send(mg_connection* connection, const HttpResponse& response, bool head) {
  mg_response_header_start(connection, response.status);
  mg_response_header_add(connection, "Content-Type", response.content_type.c_str(), -1);
  mg_response_header_add(connection, "Cache-Control", "no-store", -1);
  mg_response_header_add(connection, "Content-Length", std::to_string(response.body.size()).c_str(),
                         -1);
  mg_response_header_send(connection);
  if (!head) mg_write(connection, response.body.data(), response.body.size());
}

}  // namespace

void HttpServer::Stop::operator()(mg_context* context) const {
  mg_stop(context);
}

HttpServer::HttpServer(const std::string& bind, int port, int threads) : port_(port) {
  const std::string address = detail::concat(bind, ":", port);
  if (const std::string why = why_not_bindable(bind, port); !why.empty())
    throw PortRefused(address, why);
  // civetweb asks for 100 KiB thread stacks; the floor must be linked in to give them room.
  TANDEM_CHECK(thread_stack_bytes(100 * 1024) == kThreadStackFloorBytes);
  const std::string thread_count = std::to_string(threads);
  // Each connection holds a thread while its request arrives: a client that sends half a request
  // (or a body it never finishes) is dropped after kRequestTimeoutMs without a byte, and one whose
  // refused request still has body coming is not read past kLingerMs, so a few stalled clients
  // cannot keep a scraper out for long.
  const std::string request_timeout = std::to_string(kRequestTimeoutMs);
  const std::string linger = std::to_string(kLingerMs);
  const char* options[] = {"listening_ports",
                           address.c_str(),
                           "num_threads",
                           thread_count.c_str(),
                           "enable_keep_alive",
                           "no",
                           "request_timeout_ms",
                           request_timeout.c_str(),
                           "linger_timeout_ms",
                           linger.c_str(),
                           nullptr};
  mg_callbacks callbacks{};
  // civetweb would print its own errors to stderr; the refusal below says what went wrong.
  callbacks.log_message = [](const mg_connection*, const char*) { return 1; };
  context_.reset(mg_start(&callbacks, nullptr, options));
  if (!context_) throw PortRefused(address, "taken between the check and the server's bind");
  endpoint_ = bind == "0.0.0.0" ? detail::concat(host_name(), ":", port) : address;
  wake_address_.sin_family = AF_INET;
  wake_address_.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, bind == "0.0.0.0" ? "127.0.0.1" : bind.c_str(), &wake_address_.sin_addr);
}

HttpServer::~HttpServer() {
  // civetweb's listening thread looks at its stop flag only between polls of up to 2 s, so a
  // plain stop takes up to 2 s (a finished run would wait that long to exit); connections of our
  // own while it stops end the poll at once.
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
  context_.reset();
  stopped = true;
  waker.join();
}

void HttpServer::handle(const std::string& path, Handler handler) {
  routes_.push_back({path, std::move(handler)});
  mg_set_request_handler(context_.get(), path.c_str(), &HttpServer::answer, &routes_.back());
}

int HttpServer::answer(mg_connection* connection, void* route_pointer) {
  const auto& route = *static_cast<const Route*>(route_pointer);
  const mg_request_info* request = mg_get_request_info(connection);
  HttpResponse response;
  const bool head = std::strcmp(request->request_method, "HEAD") == 0;
  if (!request->local_uri || std::strcmp(request->local_uri, route.path.c_str()) != 0) {
    response = {404, "text/plain; charset=utf-8", "not found\n"};
  } else if (std::strcmp(request->request_method, "GET") != 0 && !head) {
    response = {405, "text/plain; charset=utf-8", "only GET\n"};
  } else {
    try {
      response = route.handler();
    } catch (const std::exception& error) {
      response = {500, "text/plain; charset=utf-8", detail::concat(error.what(), "\n")};
    }
  }
  send(connection, response, head);
  return response.status;
}

}  // namespace tandem::monitoring
