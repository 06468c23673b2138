// The Prometheus file_sd targets file (monitoring.sd_file): one entry per rank's metrics endpoint,
// labelled job, rank and node (or, under tandem-launch, one per node's endpoint), so that a scrape
// config with file_sd_configs (monitoring/prometheus/prometheus.yml) finds every rank of a job
// without listing ports.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tandem::monitoring {

struct ScrapeTarget {
  std::string endpoint;  // "HOST:PORT"
  int rank = 0;
  std::string node;
};

// A target as one line of text, for gathering every rank's on rank 0, and back.
std::string encode_target(const ScrapeTarget& target);
ScrapeTarget decode_target(std::string_view text);

// The targets file's JSON: [{"targets": [ENDPOINT], "labels": {"job", "rank", "node"}}, ...].
std::string targets_file_json(const std::vector<ScrapeTarget>& targets, std::string_view job);

// A node's endpoint under tandem-launch, holding every rank of the node.
struct NodeTarget {
  std::string endpoint;  // "HOST:PORT"; "" while not known
  std::string node;
};

// The launcher's targets file: [{"targets": [ENDPOINT], "labels": {"job", "node"}}, ...], one
// entry per node whose endpoint is known; no rank label (the exposition's series carry theirs).
std::string node_targets_file_json(const std::vector<NodeTarget>& targets, std::string_view job);

// Replaces `path` whole by the targets file (runtime/core/output_file.h: a reader, Prometheus
// among them, never sees half of it); throws an Error naming monitoring.sd_file otherwise.
void write_targets_file(const std::string& path, const std::vector<ScrapeTarget>& targets,
                        std::string_view job);

}  // namespace tandem::monitoring
