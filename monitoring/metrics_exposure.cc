// Choosing a rank's exposure: the launcher's relay when there is a launcher, else a port of its
// own.
#include "monitoring/metrics_exposure.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "monitoring/metrics_relay.h"
#include "monitoring/metrics_server.h"
#include "runtime/core/errors.h"

namespace tandem::monitoring {

std::unique_ptr<MetricsExposure> open_metrics_exposure(const MonitoringConfig& config,
                                                       const ExposurePlace& place) {
  TANDEM_CHECK(config.metrics_port > 0 && config.metrics_port <= 65535);
  if (place.launcher_metrics_fd >= 0) {
    const int fd = place.launcher_metrics_fd;
    struct stat info {};
    TANDEM_USER_CHECK(::fstat(fd, &info) == 0 && S_ISSOCK(info.st_mode), "TANDEM_METRICS_FD=", fd,
                      " is not an open socket: tandem-launch sets it for the processes it starts "
                      "(and passes that socket); unset TANDEM_METRICS_FD when starting "
                      "tandem-train another way");
    // What this process starts must not answer for it.
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    RelayHello hello{config.bind,      static_cast<int>(config.metrics_port),
                     config.sd_file,   config.job,
                     place.rank,       place.local_rank,
                     place.world_size, place.node};
    return std::make_unique<MetricsRelay>(OwnedFd(fd), hello);
  }
  const int64_t port = config.metrics_port + place.local_rank;
  TANDEM_CONFIG_CHECK(port <= 65535, "monitoring.metrics_port = ", config.metrics_port,
                      " plus this rank's LOCAL_RANK ", place.local_rank,
                      " passes 65535; lower monitoring.metrics_port");
  return std::make_unique<MetricsServer>(config.bind, static_cast<int>(port));
}

}  // namespace tandem::monitoring
