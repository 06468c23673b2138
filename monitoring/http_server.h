// A small HTTP server (civetweb) for what tandem shows over HTTP: /metrics and /status on a rank
// or a launcher. Handlers run on civetweb's threads and only read what their owners publish; they
// never call into a communicator. The port is bound when the server is made, so that a taken port
// is found at startup with the reason errno gives.
#pragma once

#include <netinet/in.h>

#include <functional>
#include <list>
#include <memory>
#include <stdexcept>
#include <string>

struct mg_context;
struct mg_connection;

namespace tandem::monitoring {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// The port could not be had: `address` is BIND:PORT, `why` says why in words (taken, not an
// address of this machine, a privileged port). The owner turns it into its configuration error.
class PortRefused : public std::runtime_error {
 public:
  PortRefused(std::string address, std::string why)
      : std::runtime_error(address + ": " + why),
        address(std::move(address)),
        why(std::move(why)) {}
  std::string address, why;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse()>;

  // Listens on bind:port (an IPv4 address) with `threads` request threads; throws PortRefused.
  HttpServer(const std::string& bind, int port, int threads = 8);
  // A request (line, headers and body) that stalls this long between bytes is dropped.
  static constexpr int kRequestTimeoutMs = 3000;
  static constexpr int kLingerMs = 500;
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // GET `path` (and nothing below it) answers with `handler`'s response from now on; other
  // methods get 405. A handler that throws answers 500 with the error's text.
  void handle(const std::string& path, Handler handler);
  // "HOST:PORT" as a scraper reaches it: the bound address, or this machine's host name when
  // bound to every interface (0.0.0.0).
  const std::string& endpoint() const { return endpoint_; }
  int port() const { return port_; }

 private:
  struct Route {
    std::string path;
    Handler handler;
  };
  static int answer(::mg_connection* connection, void* route);

  std::list<Route> routes_;  // stable addresses: civetweb holds pointers to them
  struct Stop {
    void operator()(mg_context* context) const;
  };
  std::unique_ptr<mg_context, Stop> context_;
  std::string endpoint_;
  int port_ = 0;
  sockaddr_in wake_address_{};  // where the destructor connects to stop civetweb at once
};

}  // namespace tandem::monitoring
