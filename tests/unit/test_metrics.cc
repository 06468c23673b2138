// Metrics: the reference in docs/metrics.md is the catalog's, the catalog follows Prometheus's
// naming conventions, every family is in the exposition before the first step, a step's,
// evaluation's and checkpoint's values land where the reference says, a taken port is a usage
// error naming the key, the targets file lists every rank, the monitoring keys refuse bad values,
// and every query of the Grafana dashboard names only metrics the job exports.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "monitoring/metric_catalog.h"
#include "monitoring/metrics.h"
#include "monitoring/metrics_server.h"
#include "monitoring/targets_file.h"
#include "runtime/core/config.h"
#include "runtime/core/owned_fd.h"
#include "tests/unit/error_text.h"

namespace tandem::monitoring {
namespace {

std::string read_source_file(const std::string& relative) {
  std::ifstream in(std::string(TANDEM_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << relative << " is missing";
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every sample of an exposition: "name{labels}" (as printed) -> value.
std::map<std::string, double> samples(const std::string& exposition) {
  std::map<std::string, double> out;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    const std::string value = line.substr(space + 1);
    out[line.substr(0, space)] = value == "Nan" || value == "NaN" ? NAN : std::stod(value);
  }
  return out;
}

// The value of the one sample of `name` whose labels include every `label="value"` given.
double sample(const std::map<std::string, double>& all, const std::string& name,
              const std::vector<std::string>& labels = {}) {
  const double* found = nullptr;
  for (const auto& [series, value] : all) {
    if (series.compare(0, name.size() + 1, name + "{") != 0) continue;
    bool match = true;
    for (const std::string& label : labels)
      match = match && series.find(label) != std::string::npos;
    if (!match) continue;
    EXPECT_EQ(found, nullptr) << "more than one series of " << name << " matches";
    found = &value;
  }
  EXPECT_NE(found, nullptr) << "no series of " << name << " with those labels";
  return found ? *found : NAN;
}

TEST(Metrics, ReferenceDocumentIsCurrent) {
  EXPECT_EQ(read_source_file("docs/metrics.md"), metrics_reference_markdown())
      << "regenerate with: build/bin/tandem-train --metrics-reference > docs/metrics.md";
}

TEST(Metrics, CatalogFollowsPrometheusNamingConventions) {
  const std::regex name_pattern("tandem_[a-z0-9]+(_[a-z0-9]+)*");
  const std::set<std::string> bounded_labels = {"version", "commit",  "stage", "direction", "layer",
                                                "expert",  "outcome", "kind",  "phase"};
  std::set<std::string> names;
  for (const MetricSpec& spec : metric_catalog()) {
    const std::string name(spec.name);
    SCOPED_TRACE(name);
    EXPECT_TRUE(names.insert(name).second) << "listed twice";
    EXPECT_TRUE(std::regex_match(name, name_pattern));
    EXPECT_FALSE(spec.help.empty());
    const bool total = name.ends_with("_total");
    EXPECT_EQ(total, spec.type == MetricType::kCounter) << "counters, and only they, end _total";
    if (spec.unit == "seconds") {
      // Durations are histograms, never a gauge of the last one; time accumulated over steps
      // (like node_cpu_seconds_total) is a _seconds_total counter.
      EXPECT_TRUE(name.ends_with("_seconds") || name.ends_with("_seconds_total"));
      EXPECT_EQ(spec.type,
                name.ends_with("_seconds") ? MetricType::kHistogram : MetricType::kCounter);
    }
    if (spec.unit == "bytes") {
      EXPECT_TRUE(name.ends_with("_bytes") || name.ends_with("_bytes_total"));
    }
    if (spec.unit.starts_with("ratio")) {
      EXPECT_TRUE(name.ends_with("_ratio"));
    }
    EXPECT_EQ(spec.type == MetricType::kHistogram, !spec.buckets.empty());
    EXPECT_TRUE(std::is_sorted(spec.buckets.begin(), spec.buckets.end()));
    for (const MetricLabel& label : spec.labels) {
      EXPECT_TRUE(bounded_labels.count(std::string(label.name)))
          << "label " << label.name << " is not one of the bounded ones";
      EXPECT_NE(label.name, "rank") << "rank is on every series already";
    }
  }
  // What issue 14 asks for by name.
  for (const char* required :
       {"tandem_steps_total", "tandem_tokens_total", "tandem_loss", "tandem_eval_loss",
        "tandem_learning_rate", "tandem_grad_norm", "tandem_step_seconds", "tandem_build_info",
        "tandem_straggler", "tandem_relative_speed_ratio", "tandem_step_phase_seconds_total"})
    EXPECT_TRUE(names.count(required)) << required;
}

TEST(Metrics, EveryFamilyIsExposedWithSeriesBeforeTheFirstStep) {
  RankMetrics metrics({3, "host-a", 2});
  metrics.place({1, {2, 5}, 4});
  const std::string text = metrics.exposition();
  const auto all = samples(text);
  for (const MetricSpec& spec : metric_catalog()) {
    if (spec.from_launcher) continue;  // the node endpoint's, not a rank's
    const std::string name(spec.name);
    SCOPED_TRACE(name);
    EXPECT_NE(text.find(detail::concat("# TYPE ", name, " ", metric_type_name(spec.type), "\n")),
              std::string::npos);
    const std::string first_sample =
        spec.type == MetricType::kHistogram ? name + "_count{" : name + "{";
    EXPECT_NE(text.find("\n" + first_sample), std::string::npos) << "a family without series";
  }
  for (const auto& [series, value] : all) {
    EXPECT_NE(series.find("rank=\"3\""), std::string::npos) << series;
    EXPECT_NE(series.find("node=\"host-a\""), std::string::npos) << series;
  }
  EXPECT_EQ(sample(all, "tandem_steps_total"), 0);
  EXPECT_TRUE(std::isnan(sample(all, "tandem_loss"))) << "not measured yet: NaN, not 0";
  EXPECT_TRUE(std::isnan(sample(all, "tandem_eval_loss")));
  EXPECT_TRUE(std::isnan(sample(all, "tandem_pipeline_bubble_ratio", {"stage=\"1\""})));
  EXPECT_EQ(sample(all, "tandem_restarts_total"), 2);
  EXPECT_EQ(sample(all, "tandem_build_info"), 1);
  EXPECT_EQ(sample(all, "tandem_expert_tokens_total", {"layer=\"5\"", "expert=\"3\""}), 0);
  EXPECT_GT(sample(all, "tandem_resident_memory_bytes"), 1e6) << "a process takes a megabyte";
}

TEST(Metrics, StepEvaluationAndCheckpointValuesLandInTheirSeries) {
  RankMetrics metrics({0, "n", 0});
  metrics.place({0, {1}, 3});
  metrics.set_peak_flops(1e9);
  StepValues step;
  step.step = 7;
  step.loss = 2.5;
  step.learning_rate = 1e-3;
  step.grad_norm = 0.75;
  step.tokens = 1000;
  step.seconds = 0.03;
  step.flops_per_second = 2.5e8;
  step.bubble_ratio = 0.125;
  step.dispatch_bytes = 300;
  step.combine_bytes = 200;
  step.dispatch_exposed_seconds = 0.004;
  step.combine_exposed_seconds = 0.002;
  step.pipeline_sent_bytes = 64;
  step.pipeline_received_bytes = 32;
  step.expert_tokens = {{10, 20, 30}};
  step.fp8_values = 100;
  step.fp8_saturated = 1;
  metrics.record_step(step);
  metrics.record_step(step);
  metrics.record_evaluation(2.75, 1.5);
  CheckpointTotals totals;
  totals.committed = 1;
  totals.last_committed_step = 7;
  totals.in_step_seconds = 0.05;
  totals.write_seconds = 0.4;
  totals.bytes = 4096;
  metrics.record_checkpoints(totals);
  metrics.record_checkpoints(totals);  // a boundary without checkpoint work changes nothing
  metrics.record_comm_fault(CommFaultKind::kTimeout);
  const auto all = samples(metrics.exposition());
  EXPECT_EQ(sample(all, "tandem_steps_total"), 2);
  EXPECT_EQ(sample(all, "tandem_step"), 7);
  EXPECT_EQ(sample(all, "tandem_tokens_total"), 2000);
  EXPECT_EQ(sample(all, "tandem_loss"), 2.5);
  EXPECT_EQ(sample(all, "tandem_learning_rate"), 1e-3);
  EXPECT_EQ(sample(all, "tandem_grad_norm"), 0.75);
  EXPECT_EQ(sample(all, "tandem_step_seconds_count"), 2);
  EXPECT_NEAR(sample(all, "tandem_step_seconds_sum"), 0.06, 1e-12);
  EXPECT_EQ(sample(all, "tandem_step_seconds_bucket", {"le=\"0.05\""}), 2);
  EXPECT_EQ(sample(all, "tandem_step_seconds_bucket", {"le=\"0.02\""}), 0);
  EXPECT_EQ(sample(all, "tandem_model_flops_utilization_ratio"), 0.25);
  EXPECT_EQ(sample(all, "tandem_peak_flops"), 1e9);
  EXPECT_EQ(sample(all, "tandem_pipeline_bubble_ratio", {"stage=\"0\""}), 0.125);
  EXPECT_EQ(sample(all, "tandem_alltoall_bytes_total", {"direction=\"dispatch\""}), 600);
  EXPECT_EQ(sample(all, "tandem_alltoall_bytes_total", {"direction=\"combine\""}), 400);
  EXPECT_NEAR(sample(all, "tandem_alltoall_exposed_seconds_sum", {"direction=\"dispatch\""}), 0.008,
              1e-12);
  EXPECT_EQ(sample(all, "tandem_pipeline_bytes_total", {"direction=\"send\""}), 128);
  EXPECT_EQ(sample(all, "tandem_pipeline_bytes_total", {"direction=\"recv\""}), 64);
  EXPECT_EQ(sample(all, "tandem_expert_tokens_total", {"layer=\"1\"", "expert=\"2\""}), 60);
  EXPECT_EQ(sample(all, "tandem_fp8_values_total"), 200);
  EXPECT_EQ(sample(all, "tandem_fp8_saturated_values_total"), 2);
  EXPECT_EQ(sample(all, "tandem_eval_loss"), 2.75);
  EXPECT_EQ(sample(all, "tandem_eval_seconds_count"), 1);
  EXPECT_EQ(sample(all, "tandem_checkpoints_total", {"outcome=\"committed\""}), 1);
  EXPECT_EQ(sample(all, "tandem_checkpoints_total", {"outcome=\"failed\""}), 0);
  EXPECT_EQ(sample(all, "tandem_checkpoint_last_step"), 7);
  EXPECT_EQ(sample(all, "tandem_checkpoint_stall_seconds_count"), 1);
  EXPECT_EQ(sample(all, "tandem_checkpoint_stall_seconds_sum"), 0.05);
  EXPECT_EQ(sample(all, "tandem_checkpoint_write_seconds_count"), 1);
  EXPECT_EQ(sample(all, "tandem_checkpoint_bytes_total"), 4096);
  EXPECT_EQ(sample(all, "tandem_comm_faults_total", {"kind=\"timeout\""}), 1);
  EXPECT_EQ(sample(all, "tandem_comm_faults_total", {"kind=\"peer_lost\""}), 0);
}

TEST(Metrics, AStepOfAnotherShapeThanThePlaceIsRefused) {
  RankMetrics metrics({0, "n", 0});
  metrics.place({0, {1}, 3});
  StepValues step;
  step.expert_tokens = {{1, 2}};  // 2 experts, placed with 3
  EXPECT_THROW(metrics.record_step(step), Error);
}

TEST(Metrics, ATakenPortIsAUsageErrorNamingTheKey) {
  OwnedFd taken(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(taken.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(taken.get(), 1), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(taken.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int port = ntohs(address.sin_port);
  bool usage_error = false;
  const std::string message = testing::error_of([&] {
    try {
      MetricsServer server("127.0.0.1", port);
    } catch (const UsageError&) {
      usage_error = true;
      throw;
    }
  });
  EXPECT_TRUE(usage_error) << "a taken port is the user's to fix: exit 2, no restart";
  EXPECT_NE(message.find("monitoring.metrics_port"), std::string::npos) << message;
  EXPECT_NE(message.find(detail::concat("127.0.0.1:", port)), std::string::npos) << message;
  EXPECT_NE(message.find("in use"), std::string::npos) << message;
  taken.reset();
  MetricsServer free_now("127.0.0.1", port);
  EXPECT_EQ(free_now.endpoint(), detail::concat("127.0.0.1:", port));
}

TEST(Metrics, TargetsFileListsEveryRankWithItsLabels) {
  const std::vector<ScrapeTarget> targets = {{"127.0.0.1:9400", 0, "node-a"},
                                             {"127.0.0.1:9401", 1, "node-a"}};
  for (const ScrapeTarget& t : targets) {
    const ScrapeTarget back = decode_target(encode_target(t));
    EXPECT_EQ(back.endpoint, t.endpoint);
    EXPECT_EQ(back.rank, t.rank);
    EXPECT_EQ(back.node, t.node);
  }
  const nlohmann::json file = nlohmann::json::parse(targets_file_json(targets, "run-7"));
  ASSERT_EQ(file.size(), 2u);
  EXPECT_EQ(file[1]["targets"], nlohmann::json::array({"127.0.0.1:9401"}));
  EXPECT_EQ(file[1]["labels"],
            nlohmann::json({{"job", "run-7"}, {"rank", "1"}, {"node", "node-a"}}));
  EXPECT_THROW(decode_target("not json"), Error);
}

TEST(Metrics, MonitoringKeysRefuseBadValuesNamingTheKey) {
  auto refused = [](std::vector<std::string> overrides) {
    Config c;
    for (const auto& o : overrides) apply_override(c, o);
    return testing::error_of([&] { validate_config(c); });
  };
  EXPECT_NE(refused({"monitoring.metrics_port=70000"}).find("monitoring.metrics_port = 70000"),
            std::string::npos);
  EXPECT_NE(refused({"monitoring.bind=localhost"}).find("monitoring.bind = \"localhost\""),
            std::string::npos);
  EXPECT_NE(refused({"monitoring.sd_file=t.json"}).find("need monitoring.metrics_port"),
            std::string::npos);
  EXPECT_NE(refused({"monitoring.metrics_port=9400", "monitoring.job="}).find("monitoring.job"),
            std::string::npos);
  Config fine;
  apply_override(fine, "monitoring.metrics_port=9400");
  apply_override(fine, "monitoring.bind=0.0.0.0");
  apply_override(fine, "monitoring.sd_file=t.json");
  EXPECT_NO_THROW(validate_config(fine));
}

// Every string under `node` keyed `key`, anywhere in the JSON tree.
void collect(const nlohmann::json& node, const std::string& key, std::vector<std::string>& out) {
  if (node.is_object()) {
    for (const auto& [k, v] : node.items()) {
      if (k == key && v.is_string()) out.push_back(v.get<std::string>());
      collect(v, key, out);
    }
  } else if (node.is_array()) {
    for (const auto& v : node) collect(v, key, out);
  }
}

// The names a query selects that look like tandem's, and, for each, the selector after it.
std::vector<std::pair<std::string, std::string>> tandem_selectors(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::regex selector("(tandem_[a-zA-Z0-9_:]*)(\\{[^}]*\\})?");
  for (auto it = std::sregex_iterator(query.begin(), query.end(), selector);
       it != std::sregex_iterator(); ++it)
    out.emplace_back((*it)[1].str(), (*it)[2].str());
  return out;
}

bool exported(const std::string& name) {
  for (const MetricSpec& spec : metric_catalog()) {
    if (name == spec.name) return true;
    if (spec.type == MetricType::kHistogram)
      for (const char* suffix : {"_bucket", "_sum", "_count"})
        if (name == std::string(spec.name) + suffix) return true;
  }
  return false;
}

TEST(Dashboard, EveryQueryNamesOnlyMetricsTheJobExportsAndSelectsTheJob) {
  const nlohmann::json dashboard =
      nlohmann::json::parse(read_source_file("monitoring/dashboards/tandem.json"));
  std::set<std::string> variables;
  for (const auto& v : dashboard.at("templating").at("list")) variables.insert(v.at("name"));
  EXPECT_TRUE(variables.count("job")) << "the job template variable";
  std::set<std::string> titles;
  int queries = 0;
  for (const auto& panel : dashboard.at("panels")) {
    titles.insert(panel.at("title"));
    ASSERT_TRUE(panel.contains("targets")) << panel.at("title");
    for (const auto& target : panel.at("targets")) {
      const std::string expr = target.at("expr");
      ++queries;
      const auto selectors = tandem_selectors(expr);
      EXPECT_FALSE(selectors.empty()) << "a query of no tandem metric: " << expr;
      for (const auto& [name, labels] : selectors) {
        EXPECT_TRUE(exported(name)) << name << " (in " << expr << ") is not in the catalog";
        EXPECT_NE(labels.find("job=\"$job\""), std::string::npos)
            << name << " in '" << expr << "' does not select job=\"$job\"";
      }
    }
  }
  EXPECT_GE(queries, 20);
  std::vector<std::string> variable_queries;
  collect(dashboard.at("templating"), "definition", variable_queries);
  for (const std::string& q : variable_queries)
    for (const auto& [name, labels] : tandem_selectors(q))
      EXPECT_TRUE(exported(name)) << name << " (in the variable " << q << ")";
  for (const char* panel :
       {"Loss and held-out loss", "Tokens per second", "Model FLOP utilisation", "Pipeline bubble",
        "Exposed all-to-all time", "Expert load, layer $layer", "Step time per rank",
        "Slowest rank", "Resident memory per rank", "Checkpoint stall",
        "Restarts, faults and checkpoints"})
    EXPECT_TRUE(titles.count(panel)) << "no panel '" << panel << "'";
}

TEST(Dashboard, TheCheckCatchesAMetricTheJobDoesNotExport) {
  // The test above must be able to fail: a misspelt name and a missing job selector are seen.
  const auto selectors =
      tandem_selectors("rate(tandem_token_total{job=\"$job\"}[1m]) + tandem_loss");
  ASSERT_EQ(selectors.size(), 2u);
  EXPECT_FALSE(exported(selectors[0].first));
  EXPECT_TRUE(exported(selectors[1].first));
  EXPECT_EQ(selectors[1].second, "");
  EXPECT_TRUE(exported("tandem_step_seconds_bucket"));
  EXPECT_FALSE(exported("tandem_loss_bucket"));
}

}  // namespace
}  // namespace tandem::monitoring
