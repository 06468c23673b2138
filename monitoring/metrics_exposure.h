// How a rank shows its metrics and its /status page: on an HTTP endpoint of its own
// (MetricsServer, monitoring.metrics_port + LOCAL_RANK), or, under tandem-launch, through its
// node's launcher, which serves one endpoint for every rank of the node (MetricsRelay). The
// trainer picks one through open_metrics_exposure and never asks which it got.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "monitoring/metrics.h"
#include "runtime/core/config.h"

namespace tandem::monitoring {

class MetricsExposure {
 public:
  virtual ~MetricsExposure() = default;
  // From now on scrapes get `metrics`, which must outlive this object.
  virtual void serve(const RankMetrics& metrics) = 0;
  // From now on /status answers with the HTML `page` renders (on another thread).
  virtual void serve_status(std::function<std::string()> page) = 0;
  // "HOST:PORT" where a scraper finds this rank's values (under tandem-launch: the node's).
  virtual const std::string& endpoint() const = 0;
  // Whether the ranks write monitoring.sd_file (rank 0, one target per rank); under
  // tandem-launch node 0's launcher writes it instead, one target per node.
  virtual bool ranks_write_targets_file() const = 0;
};

// Where this process is, as the exposure needs it.
struct ExposurePlace {
  int rank = 0, local_rank = 0, world_size = 1;
  std::string node;              // host name
  int launcher_metrics_fd = -1;  // TANDEM_METRICS_FD, or -1 without tandem-launch
};

// The launcher's relay when it gave this process a metrics socket, else a server of its own on
// monitoring.bind:(metrics_port + local_rank). Call only with metrics_port > 0. Throws a
// UsageError naming monitoring.metrics_port when the port cannot be had (by this rank, or by
// its launcher for the node).
std::unique_ptr<MetricsExposure> open_metrics_exposure(const MonitoringConfig& config,
                                                       const ExposurePlace& place);

}  // namespace tandem::monitoring
