// Every metric tandem exports, named once: its type, unit, labels, histogram buckets and meaning.
// The registry (metrics.h) registers exactly these families, and `tandem-train
// --metrics-reference` prints this table as docs/metrics.md (a unit test keeps the two equal), so
// the reference cannot drift from what a scrape shows.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tandem::monitoring {

enum class MetricType { kCounter, kGauge, kHistogram };
std::string_view metric_type_name(MetricType type);  // "counter", "gauge", "histogram"

struct MetricLabel {
  std::string_view name;
  std::string_view meaning;  // and its values, which are always a bounded set
};

struct MetricSpec {
  std::string_view name;  // "tandem_steps_total"
  MetricType type;
  std::string_view unit;            // base units: "seconds", "bytes", "ratio (0..1)", "tokens"...
  std::vector<MetricLabel> labels;  // besides rank and node, which every series carries
  std::string_view help;            // the HELP line, and the reference's meaning column
  std::vector<double> buckets;      // histograms: upper bounds in the metric's unit
  // Served by tandem-launch's node endpoint beside its ranks' families, not by a rank: no rank's
  // registry holds it.
  bool from_launcher = false;
};

// Every family in exposition order. Every series of every family also carries `rank` (the
// process's rank in the job) and `node` (its host name).
const std::vector<MetricSpec>& metric_catalog();
// The catalog entry of `name`; throws an Error for a name that is not in it.
const MetricSpec& metric_spec(std::string_view name);
// The reference as Markdown (docs/metrics.md is this output).
std::string metrics_reference_markdown();

}  // namespace tandem::monitoring
