// A rank's metrics under tandem-launch: instead of binding a port, the rank answers its node's
// launcher over the socket the launcher handed it (TANDEM_METRICS_FD, monitoring/
// metrics_channel.h), and the launcher serves one endpoint for every rank of the node. First the
// relay says hello with what the launcher needs from the configuration and waits for the answer:
// the node endpoint, or the launcher's reason for having none (a taken port), which is this
// rank's usage error. Then a thread of its own answers each request with the rank's exposition
// or /status page; the training thread is never involved.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "monitoring/metrics_channel.h"
#include "monitoring/metrics_exposure.h"
#include "runtime/core/owned_fd.h"

namespace tandem::monitoring {

class MetricsRelay : public MetricsExposure {
 public:
  // Takes the launcher's socket, says `hello` and waits up to answer_timeout_ms for the answer.
  // Throws a UsageError with the launcher's text (it names monitoring.metrics_port) when the
  // node has no endpoint, and an Error when the launcher does not answer.
  MetricsRelay(OwnedFd socket, const RelayHello& hello, int answer_timeout_ms = 30000);
  // Stops the thread, then closes the socket: the launcher reads end of file.
  ~MetricsRelay() override;
  MetricsRelay(const MetricsRelay&) = delete;
  MetricsRelay& operator=(const MetricsRelay&) = delete;

  void serve(const RankMetrics& metrics) override;
  void serve_status(std::function<std::string()> page) override;
  const std::string& endpoint() const override { return endpoint_; }
  bool ranks_write_targets_file() const override { return false; }

 private:
  void run();
  Frame answer(const Frame& request);
  // Writes all of `bytes`, waiting for room; false once stopping or when the launcher is gone.
  bool send_all(const std::string& bytes);

  OwnedFd socket_;
  OwnedFd wake_;  // an eventfd the destructor writes, so the thread's poll returns at once
  std::string endpoint_;
  FrameReader reader_;
  std::mutex mutex_;  // guards metrics_ and page_ (set by the training thread, read by ours)
  const RankMetrics* metrics_ = nullptr;
  std::function<std::string()> page_;
  std::thread thread_;
};

}  // namespace tandem::monitoring
