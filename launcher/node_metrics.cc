// The node endpoint: a thread reading every rank's socket, and the HTTP handlers that ask them.
#include "launcher/node_metrics.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "monitoring/exposition_merge.h"
#include "monitoring/metric_catalog.h"
#include "monitoring/status_page.h"
#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"

namespace tandem::launcher {

using monitoring::Frame;
using monitoring::FrameKind;
using monitoring::HttpResponse;

// One rank's socket. Shared with the reading thread, so that a channel replaced by the next
// attempt's is closed only once that thread has let go of it (never while it polls the fd).
struct NodeMetrics::Channel {
  int rank = 0, local_rank = 0;
  OwnedFd fd;
  bool open = true;
  std::optional<monitoring::RelayHello> hello;  // once said
  monitoring::FrameReader reader;
  // Requests sent and not answered yet. A rank that does not answer (stopped) is not asked
  // again past a few, so its socket buffer never fills with requests.
  std::set<uint32_t> outstanding;
};

namespace {

constexpr size_t kMaxOutstanding = 4;

std::string escaped_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

NodeMetrics::NodeMetrics(NodeMetricsOptions options)
    : options_(std::move(options)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  TANDEM_CHECK(wake_, "eventfd: ", std::strerror(errno));
  thread_ = std::thread([this] { run(); });
}

NodeMetrics::~NodeMetrics() {
  std::unique_ptr<monitoring::HttpServer> http;
  std::unique_ptr<NodeTargets> targets;
  {
    std::lock_guard lock(mutex_);
    http = std::move(http_);
    targets = std::move(targets_);
  }
  http.reset();  // waits for a scrape in progress, which needs the thread below to finish
  targets.reset();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake();
  thread_.join();
}

void NodeMetrics::wake() {
  const uint64_t one = 1;
  const ssize_t n = ::write(wake_.get(), &one, sizeof one);
  static_cast<void>(n);  // the counter only needs to be non-zero
}

OwnedFd NodeMetrics::channel_for(int rank, int local_rank) {
  int fds[2];
  TANDEM_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0,
               "socketpair for rank ", rank, "'s metrics: ", std::strerror(errno));
  auto channel = std::make_shared<Channel>();
  channel->rank = rank;
  channel->local_rank = local_rank;
  channel->fd = OwnedFd(fds[0]);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  {
    std::lock_guard lock(mutex_);
    if (channels_.size() <= static_cast<size_t>(local_rank))
      channels_.resize(static_cast<size_t>(local_rank) + 1);
    channels_[static_cast<size_t>(local_rank)] = channel;
  }
  wake();
  return OwnedFd(fds[1]);
}

namespace {

// A small frame in one send, never blocking; false when it did not go whole (the channel is
// then unusable: a partial frame would corrupt the stream).
bool send_frame(int fd, const Frame& frame) {
  const std::string bytes = monitoring::encode_frame(frame);
  ssize_t n;
  do n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(bytes.size());
}

}  // namespace

std::string NodeMetrics::answer_hello(const monitoring::RelayHello& hello) {
  const std::string fix =
      "; choose another monitoring.metrics_port (under tandem-launch each node serves one "
      "endpoint on that port for all of its ranks), or 0 to turn metrics off";
  if (!http_ && bind_error_.empty()) {
    try {
      if (options_.targets.node_rank == 0 && !hello.sd_file.empty())
        check_output_path("monitoring.sd_file", hello.sd_file);
      auto http = std::make_unique<monitoring::HttpServer>(hello.bind, hello.port, 16);
      http->handle("/metrics", [this] { return metrics_page(); });
      http->handle("/status", [this] { return status_page(); });
      bind_ = hello.bind;
      port_ = hello.port;
      targets_ = std::make_unique<NodeTargets>(options_.targets, http->endpoint(), hello.sd_file,
                                               hello.job);
      http_ = std::move(http);
      std::fprintf(stderr,
                   "tandem-launch: serving every local rank's metrics on http://%s/metrics "
                   "(and /status) for every attempt\n",
                   http_->endpoint().c_str());
    } catch (const monitoring::PortRefused& refused) {
      bind_error_ = detail::concat("monitoring.metrics_port: tandem-launch cannot serve node ",
                                   options_.targets.host, "'s metrics on ", refused.address, ": ",
                                   refused.why, fix);
    } catch (const Error& error) {
      bind_error_ = error.what();  // the targets file's path, named by check_output_path
    }
    if (!bind_error_.empty()) std::fprintf(stderr, "tandem-launch: %s\n", bind_error_.c_str());
  }
  if (!bind_error_.empty()) return nlohmann::json{{"error", bind_error_}}.dump();
  if (hello.bind != bind_ || hello.port != port_)
    return nlohmann::json{
        {"error", detail::concat("monitoring.metrics_port: rank ", hello.rank, " asks for ",
                                 hello.bind, ":", hello.port, ", but node ", options_.targets.host,
                                 " already serves its metrics on ", bind_, ":", port_,
                                 " for another rank: give every rank the same monitoring.bind "
                                 "and monitoring.metrics_port")}}
        .dump();
  return nlohmann::json{{"endpoint", http_->endpoint()}}.dump();
}

void NodeMetrics::handle(Channel& channel, const Frame& frame) {
  switch (frame.kind) {
    case FrameKind::kHello: {
      monitoring::RelayHello hello = monitoring::decode_hello(frame.body);
      const std::string answer = answer_hello(hello);
      channel.hello = std::move(hello);
      if (!send_frame(channel.fd.get(), {FrameKind::kHelloAnswer, 0, answer})) channel.open = false;
      break;
    }
    case FrameKind::kReply:
    case FrameKind::kNotServing: {
      channel.outstanding.erase(frame.request);
      const auto it = pending_.find(frame.request);
      if (it == pending_.end()) break;  // a scrape that gave up on it
      it->second.done = true;
      if (frame.kind == FrameKind::kReply) it->second.body = frame.body;
      replied_.notify_all();
      break;
    }
    default:
      channel.open = false;  // a rank does not ask
  }
}

void NodeMetrics::run() {
  std::vector<char> buffer(1 << 16);
  while (true) {
    std::vector<std::shared_ptr<Channel>> polled;
    std::vector<pollfd> fds = {{wake_.get(), POLLIN, 0}};
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      for (const auto& c : channels_)
        if (c && c->open) polled.push_back(c), fds.push_back({c->fd.get(), POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) return;
    uint64_t count;
    if (fds[0].revents & POLLIN) static_cast<void>(::read(wake_.get(), &count, sizeof count));
    for (size_t i = 0; i < polled.size(); ++i) {
      if (!(fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Channel& c = *polled[i];
      bool closed = false;
      std::string arrived;
      while (true) {
        const ssize_t n = ::recv(c.fd.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n > 0) {
          arrived.append(buffer.data(), static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        break;
      }
      std::lock_guard lock(mutex_);
      c.reader.append(arrived);
      try {
        while (std::optional<Frame> frame = c.reader.next()) handle(c, *frame);
      } catch (const Error&) {
        closed = true;  // not tandem-train's wire
      }
      // An exited rank: its requests will never be answered; the scrape need not wait for them.
      if (closed || !c.open) {
        c.open = false;
        for (uint32_t request : c.outstanding)
          if (auto it = pending_.find(request); it != pending_.end()) it->second.done = true;
        c.outstanding.clear();
        replied_.notify_all();
      }
    }
  }
}

std::vector<std::optional<std::string>> NodeMetrics::ask(
    const std::vector<std::shared_ptr<Channel>>& asked, FrameKind kind) {
  const Clock::time_point deadline = Clock::now() + options_.scrape_deadline;
  std::unique_lock lock(mutex_);
  std::vector<uint32_t> requests(asked.size(), 0);  // 0: not asked
  for (size_t i = 0; i < asked.size(); ++i) {
    Channel& c = *asked[i];
    if (!c.open || !c.hello || c.outstanding.size() >= kMaxOutstanding) continue;
    const uint32_t request = ++next_request_ == 0 ? ++next_request_ : next_request_;
    if (!send_frame(c.fd.get(), {kind, request, ""})) continue;
    c.outstanding.insert(request);
    pending_[request] = {};
    requests[i] = request;
  }
  replied_.wait_until(lock, deadline, [&] {
    for (uint32_t r : requests)
      if (r != 0 && !pending_.at(r).done) return false;
    return true;
  });
  std::vector<std::optional<std::string>> out(asked.size());
  for (size_t i = 0; i < asked.size(); ++i) {
    if (requests[i] == 0) continue;
    out[i] = std::move(pending_.at(requests[i]).body);
    pending_.erase(requests[i]);
  }
  return out;
}

HttpResponse NodeMetrics::metrics_page() {
  std::vector<std::shared_ptr<Channel>> asked;
  {
    std::lock_guard lock(mutex_);
    for (const auto& c : channels_)
      if (c) asked.push_back(c);
  }
  const std::vector<std::optional<std::string>> replies = ask(asked, FrameKind::kAskMetrics);
  const monitoring::MetricSpec& answered = monitoring::metric_spec("tandem_launcher_rank_answered");
  std::string own =
      detail::concat("# HELP ", answered.name, " ", answered.help, "\n# TYPE ", answered.name, " ",
                     monitoring::metric_type_name(answered.type), "\n");
  std::vector<std::string> parts;
  for (size_t i = 0; i < asked.size(); ++i) {
    if (replies[i]) parts.push_back(*replies[i]);
    own += detail::concat(answered.name, "{rank=\"", asked[i]->rank, "\",node=\"",
                          escaped_label(options_.targets.host), "\"} ", replies[i] ? 1 : 0, "\n");
  }
  parts.push_back(std::move(own));
  return {200, "text/plain; version=0.0.4; charset=utf-8", monitoring::merge_expositions(parts)};
}

void NodeMetrics::note_restart(int attempt, std::string why) {
  std::lock_guard lock(mutex_);
  restarting_attempt_ = attempt;
  restarting_why_ = std::move(why);
}

HttpResponse NodeMetrics::status_page() {
  std::shared_ptr<Channel> first;
  std::string job_endpoint;
  {
    std::lock_guard lock(mutex_);
    if (!channels_.empty()) first = channels_[0];
    if (targets_) job_endpoint = targets_->job_endpoint();
  }
  if (first) {
    const auto page = ask({first}, FrameKind::kAskStatus);
    if (page[0]) {
      std::lock_guard lock(mutex_);
      last_status_page_ = *page[0];
      restarting_attempt_ = -1;
      return {200, "text/html; charset=utf-8", *page[0]};
    }
  }
  {
    std::lock_guard lock(mutex_);
    if (restarting_attempt_ >= 0)
      return {
          200, "text/html; charset=utf-8",
          monitoring::stale_page(last_status_page_,
                                 detail::concat("restarting (attempt ", restarting_attempt_, ")"),
                                 restarting_why_)};
    // Between a rank's failure and the restart (the others being stopped), or while rank 0 is
    // frozen: the last page, said to be stale, rather than none.
    if (!last_status_page_.empty())
      return {200, "text/html; charset=utf-8",
              monitoring::stale_page(last_status_page_, "not answering",
                                     "rank 0 did not answer within the scrape deadline "
                                     "(stopping, frozen, or its job is restarting)")};
  }
  const bool node0 = options_.targets.node_rank == 0;
  const std::string where =
      node0 ? "its rank 0 has none to show now (starting, restarting, or not answering)"
      : job_endpoint.empty()
          ? "the job's page is on node 0's launcher endpoint (/status there)"
          : detail::concat("the job's page is on node 0's: http://", job_endpoint, "/status");
  return {404, "text/plain; charset=utf-8",
          detail::concat("no /status page on node ", options_.targets.node_rank, " (",
                         options_.targets.host, "): ", where, "\n")};
}

}  // namespace tandem::launcher
