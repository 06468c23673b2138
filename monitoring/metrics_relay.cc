// The rank's side of the launcher's node endpoint: the hello, then one thread answering requests.
#include "monitoring/metrics_relay.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"

namespace tandem::monitoring {

namespace {

using Clock = std::chrono::steady_clock;

int ms_until(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

}  // namespace

MetricsRelay::MetricsRelay(OwnedFd socket, const RelayHello& hello, int answer_timeout_ms)
    : socket_(std::move(socket)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  TANDEM_CHECK(wake_, "eventfd: ", std::strerror(errno));
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(answer_timeout_ms);
  const std::string no_answer = detail::concat(
      "tandem-launch did not answer this rank's metrics hello on TANDEM_METRICS_FD within ",
      answer_timeout_ms / 1000.0, " s");
  TANDEM_CHECK(
      send_all(encode_frame({FrameKind::kHello, 0, encode_hello(hello)})),
      "tandem-launch's metrics socket (TANDEM_METRICS_FD) is closed: ", std::strerror(errno));
  std::optional<Frame> answer;
  while (!answer) {
    pollfd in{socket_.get(), POLLIN, 0};
    const int ready = ::poll(&in, 1, ms_until(deadline));
    if (ready < 0 && errno == EINTR) continue;
    TANDEM_CHECK(ready > 0, no_answer);
    char buffer[4096];
    const ssize_t n = ::recv(socket_.get(), buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    TANDEM_CHECK(n > 0,
                 "tandem-launch closed the metrics socket (TANDEM_METRICS_FD) before "
                 "answering this rank's hello");
    reader_.append({buffer, static_cast<size_t>(n)});
    answer = reader_.next();
  }
  TANDEM_CHECK(answer->kind == FrameKind::kHelloAnswer,
               "tandem-launch's first metrics frame is not the hello's answer");
  const nlohmann::json reply = nlohmann::json::parse(answer->body, nullptr, false);
  TANDEM_CHECK(reply.is_object(), "tandem-launch's metrics answer is not JSON: ", answer->body);
  if (reply.contains("error")) throw UsageError(reply["error"].get<std::string>());
  endpoint_ = reply.at("endpoint").get<std::string>();
  thread_ = std::thread([this] { run(); });
}

MetricsRelay::~MetricsRelay() {
  const uint64_t one = 1;
  const ssize_t n = ::write(wake_.get(), &one, sizeof one);
  static_cast<void>(n);  // an eventfd's counter cannot overflow from one write
  if (thread_.joinable()) thread_.join();
}

void MetricsRelay::serve(const RankMetrics& metrics) {
  std::lock_guard lock(mutex_);
  TANDEM_CHECK(!metrics_, "MetricsRelay::serve is called once");
  metrics_ = &metrics;
}

void MetricsRelay::serve_status(std::function<std::string()> page) {
  std::lock_guard lock(mutex_);
  page_ = std::move(page);
}

bool MetricsRelay::send_all(const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(socket_.get(), bytes.data() + done, bytes.size() - done,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    // The launcher reads as fast as its thread can; a full buffer waits, but never past a stop.
    pollfd fds[2] = {{socket_.get(), POLLOUT, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return false;
    if (fds[1].revents & POLLIN) return false;
  }
  return true;
}

Frame MetricsRelay::answer(const Frame& request) {
  const RankMetrics* metrics = nullptr;
  std::function<std::string()> page;
  {
    std::lock_guard lock(mutex_);
    metrics = metrics_;
    if (request.kind == FrameKind::kAskStatus) page = page_;
  }
  try {
    if (request.kind == FrameKind::kAskMetrics && metrics)
      return {FrameKind::kReply, request.request, metrics->exposition()};
    if (request.kind == FrameKind::kAskStatus && page)
      return {FrameKind::kReply, request.request, page()};
  } catch (const std::exception& error) {
    return {FrameKind::kNotServing, request.request, error.what()};
  }
  return {FrameKind::kNotServing, request.request,
          request.kind == FrameKind::kAskStatus ? "this rank serves no /status page"
                                                : "this rank does not serve its metrics yet"};
}

void MetricsRelay::run() {
  char buffer[4096];
  while (true) {
    pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents & POLLIN) return;
    const ssize_t n = ::recv(socket_.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return;  // the launcher is gone: nobody left to answer
    reader_.append({buffer, static_cast<size_t>(n)});
    try {
      while (std::optional<Frame> request = reader_.next())
        if (!send_all(encode_frame(answer(*request)))) return;
    } catch (const Error&) {
      return;  // not the launcher's wire: stop listening rather than answer garbage
    }
  }
}

}  // namespace tandem::monitoring
