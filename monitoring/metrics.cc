// The registry of one rank: the catalog's families and their series, and their updates.
#include "monitoring/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>

#include "monitoring/build_info.h"
#include "monitoring/metric_catalog.h"
#include "runtime/core/errors.h"

namespace tandem::monitoring {

namespace {

constexpr double kNotYet = std::numeric_limits<double>::quiet_NaN();

// What a scrape collects: the registry, under the lock every update holds.
class SnapshotCollectable final : public prometheus::Collectable {
 public:
  SnapshotCollectable(std::shared_ptr<prometheus::Registry> registry, std::mutex& mutex)
      : registry_(std::move(registry)), mutex_(mutex) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return registry_->Collect();
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex& mutex_;
};

}  // namespace

struct RankMetrics::Impl {
  mutable std::mutex mutex;  // every update, and every scrape's collection
  std::shared_ptr<prometheus::Collectable> snapshot;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::map<std::string_view, prometheus::Family<prometheus::Counter>*> counters;
  std::map<std::string_view, prometheus::Family<prometheus::Gauge>*> gauges;
  std::map<std::string_view, prometheus::Family<prometheus::Histogram>*> histograms;

  prometheus::Counter *steps, *tokens, *fp8_values, *fp8_saturated, *checkpoint_bytes;
  prometheus::Counter *dispatch_bytes, *combine_bytes, *pipeline_sent, *pipeline_received;
  prometheus::Counter *committed, *failed;
  prometheus::Counter *compute, *all_to_all_wait, *pipeline_wait, *sync_wait;
  prometheus::Gauge *straggler, *relative_speed;
  std::map<CommFaultKind, prometheus::Counter*> faults;
  prometheus::Gauge *step, *loss, *eval_loss, *learning_rate, *grad_norm, *mfu, *peak, *memory;
  prometheus::Gauge *checkpoint_last_step, *bubble = nullptr;
  prometheus::Histogram *step_seconds, *eval_seconds, *dispatch_exposed, *combine_exposed;
  prometheus::Histogram *checkpoint_stall, *checkpoint_write;
  std::vector<std::vector<prometheus::Counter*>> expert_tokens;  // [layer of the place][expert]
  bool placed = false;
  double peak_flops = 0;
  CheckpointTotals last_checkpoints;

  // Every label of a series must be one its catalog entry names: a typo here would otherwise
  // create a series the reference does not describe.
  static prometheus::Labels checked(std::string_view name, prometheus::Labels labels) {
    const MetricSpec& spec = metric_spec(name);
    for (const auto& [label, value] : labels)
      TANDEM_CHECK(std::any_of(spec.labels.begin(), spec.labels.end(),
                               [&](const MetricLabel& l) { return l.name == label; }),
                   "metric ", name, " has no label '", label, "' in the catalog");
    TANDEM_CHECK(labels.size() == spec.labels.size(), "metric ", name, " takes ",
                 spec.labels.size(), " labels, given ", labels.size());
    return labels;
  }
  prometheus::Counter& counter(std::string_view name, prometheus::Labels labels = {}) {
    return counters.at(name)->Add(checked(name, std::move(labels)));
  }
  prometheus::Gauge& gauge(std::string_view name, prometheus::Labels labels = {}) {
    return gauges.at(name)->Add(checked(name, std::move(labels)));
  }
  prometheus::Histogram& histogram(std::string_view name, prometheus::Labels labels = {}) {
    const MetricSpec& spec = metric_spec(name);
    return histograms.at(name)->Add(checked(name, std::move(labels)),
                                    prometheus::Histogram::BucketBoundaries(spec.buckets));
  }
};

RankMetrics::RankMetrics(const RankIdentity& identity) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const prometheus::Labels constant = {{"rank", std::to_string(identity.rank)},
                                       {"node", identity.node}};
  for (const MetricSpec& spec : metric_catalog()) {
    if (spec.from_launcher) continue;
    const std::string name(spec.name), help(spec.help);
    switch (spec.type) {
      case MetricType::kCounter:
        m.counters[spec.name] =
            &prometheus::BuildCounter().Name(name).Help(help).Labels(constant).Register(
                *m.registry);
        break;
      case MetricType::kGauge:
        m.gauges[spec.name] =
            &prometheus::BuildGauge().Name(name).Help(help).Labels(constant).Register(*m.registry);
        break;
      case MetricType::kHistogram:
        m.histograms[spec.name] =
            &prometheus::BuildHistogram().Name(name).Help(help).Labels(constant).Register(
                *m.registry);
        break;
    }
  }
  m.snapshot = std::make_shared<SnapshotCollectable>(m.registry, m.mutex);

  m.gauge("tandem_build_info",
          {{"version", std::string(build_version())}, {"commit", std::string(build_commit())}})
      .Set(1);
  m.steps = &m.counter("tandem_steps_total");
  m.step = &m.gauge("tandem_step");
  m.tokens = &m.counter("tandem_tokens_total");
  m.loss = &m.gauge("tandem_loss");
  m.eval_loss = &m.gauge("tandem_eval_loss");
  m.eval_seconds = &m.histogram("tandem_eval_seconds");
  m.learning_rate = &m.gauge("tandem_learning_rate");
  m.grad_norm = &m.gauge("tandem_grad_norm");
  m.step_seconds = &m.histogram("tandem_step_seconds");
  m.mfu = &m.gauge("tandem_model_flops_utilization_ratio");
  m.peak = &m.gauge("tandem_peak_flops");
  m.dispatch_bytes = &m.counter("tandem_alltoall_bytes_total", {{"direction", "dispatch"}});
  m.combine_bytes = &m.counter("tandem_alltoall_bytes_total", {{"direction", "combine"}});
  m.dispatch_exposed = &m.histogram("tandem_alltoall_exposed_seconds", {{"direction", "dispatch"}});
  m.combine_exposed = &m.histogram("tandem_alltoall_exposed_seconds", {{"direction", "combine"}});
  m.compute = &m.counter("tandem_step_phase_seconds_total", {{"phase", "compute"}});
  m.all_to_all_wait = &m.counter("tandem_step_phase_seconds_total", {{"phase", "alltoall_wait"}});
  m.pipeline_wait = &m.counter("tandem_step_phase_seconds_total", {{"phase", "pipeline_wait"}});
  m.sync_wait = &m.counter("tandem_step_phase_seconds_total", {{"phase", "sync_wait"}});
  m.straggler = &m.gauge("tandem_straggler");
  m.relative_speed = &m.gauge("tandem_relative_speed_ratio");
  m.relative_speed->Set(1);
  m.pipeline_sent = &m.counter("tandem_pipeline_bytes_total", {{"direction", "send"}});
  m.pipeline_received = &m.counter("tandem_pipeline_bytes_total", {{"direction", "recv"}});
  m.fp8_values = &m.counter("tandem_fp8_values_total");
  m.fp8_saturated = &m.counter("tandem_fp8_saturated_values_total");
  m.memory = &m.gauge("tandem_resident_memory_bytes");
  m.counter("tandem_restarts_total").Increment(static_cast<double>(identity.restart_count));
  m.committed = &m.counter("tandem_checkpoints_total", {{"outcome", "committed"}});
  m.failed = &m.counter("tandem_checkpoints_total", {{"outcome", "failed"}});
  m.checkpoint_last_step = &m.gauge("tandem_checkpoint_last_step");
  m.checkpoint_stall = &m.histogram("tandem_checkpoint_stall_seconds");
  m.checkpoint_write = &m.histogram("tandem_checkpoint_write_seconds");
  m.checkpoint_bytes = &m.counter("tandem_checkpoint_bytes_total");
  m.faults[CommFaultKind::kTimeout] = &m.counter("tandem_comm_faults_total", {{"kind", "timeout"}});
  m.faults[CommFaultKind::kPeerLost] =
      &m.counter("tandem_comm_faults_total", {{"kind", "peer_lost"}});
  m.faults[CommFaultKind::kStoreLost] =
      &m.counter("tandem_comm_faults_total", {{"kind", "store_lost"}});
  for (prometheus::Gauge* g : {m.step, m.loss, m.eval_loss, m.learning_rate, m.grad_norm, m.mfu,
                               m.peak, m.checkpoint_last_step})
    g->Set(kNotYet);
  m.memory->Set(static_cast<double>(resident_memory_bytes()));
}

RankMetrics::~RankMetrics() = default;

void RankMetrics::place(const RankPlace& place) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  TANDEM_CHECK(!m.placed, "RankMetrics::place is called once");
  m.placed = true;
  m.bubble = &m.gauge("tandem_pipeline_bubble_ratio", {{"stage", std::to_string(place.stage)}});
  m.bubble->Set(kNotYet);
  for (int64_t layer : place.expert_layers) {
    m.expert_tokens.emplace_back();
    for (int64_t e = 0; e < place.experts_per_layer; ++e)
      m.expert_tokens.back().push_back(
          &m.counter("tandem_expert_tokens_total",
                     {{"layer", std::to_string(layer)}, {"expert", std::to_string(e)}}));
  }
}

void RankMetrics::set_peak_flops(double flops_per_second) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  m.peak_flops = flops_per_second;
  m.peak->Set(flops_per_second > 0 ? flops_per_second : kNotYet);
}

void RankMetrics::record_step(const StepValues& s) {
  const double memory = static_cast<double>(resident_memory_bytes());
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  TANDEM_CHECK(s.expert_tokens.empty() || s.expert_tokens.size() == m.expert_tokens.size(),
               "a step reports the expert load of ", s.expert_tokens.size(),
               " layers, the rank was placed with ", m.expert_tokens.size());
  m.steps->Increment();
  m.step->Set(static_cast<double>(s.step));
  m.tokens->Increment(static_cast<double>(s.tokens));
  m.loss->Set(s.loss);
  m.learning_rate->Set(s.learning_rate);
  m.grad_norm->Set(s.grad_norm);
  m.step_seconds->Observe(s.seconds);
  m.mfu->Set(m.peak_flops > 0 ? s.flops_per_second / m.peak_flops : kNotYet);
  if (m.bubble) m.bubble->Set(s.bubble_ratio);
  m.dispatch_bytes->Increment(static_cast<double>(s.dispatch_bytes));
  m.combine_bytes->Increment(static_cast<double>(s.combine_bytes));
  m.dispatch_exposed->Observe(s.dispatch_exposed_seconds);
  m.combine_exposed->Observe(s.combine_exposed_seconds);
  m.pipeline_sent->Increment(static_cast<double>(s.pipeline_sent_bytes));
  m.pipeline_received->Increment(static_cast<double>(s.pipeline_received_bytes));
  for (size_t layer = 0; layer < s.expert_tokens.size(); ++layer) {
    TANDEM_CHECK(s.expert_tokens[layer].size() == m.expert_tokens[layer].size(), "layer ", layer,
                 " reports ", s.expert_tokens[layer].size(), " experts, placed with ",
                 m.expert_tokens[layer].size());
    for (size_t e = 0; e < s.expert_tokens[layer].size(); ++e)
      m.expert_tokens[layer][e]->Increment(static_cast<double>(s.expert_tokens[layer][e]));
  }
  m.fp8_values->Increment(static_cast<double>(s.fp8_values));
  m.fp8_saturated->Increment(static_cast<double>(s.fp8_saturated));
  m.compute->Increment(s.compute_seconds);
  m.all_to_all_wait->Increment(s.all_to_all_wait_seconds);
  m.pipeline_wait->Increment(s.pipeline_wait_seconds);
  m.sync_wait->Increment(s.sync_wait_seconds);
  m.straggler->Set(s.straggler ? 1 : 0);
  m.relative_speed->Set(s.relative_speed);
  m.memory->Set(memory);
}

void RankMetrics::record_evaluation(double loss, double seconds) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  m.eval_loss->Set(loss);
  m.eval_seconds->Observe(seconds);
}

void RankMetrics::record_checkpoints(const CheckpointTotals& now) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  const CheckpointTotals& before = m.last_checkpoints;
  const int64_t finished = (now.committed - before.committed) + (now.failed - before.failed);
  m.committed->Increment(static_cast<double>(now.committed - before.committed));
  m.failed->Increment(static_cast<double>(now.failed - before.failed));
  if (now.last_committed_step >= 0)
    m.checkpoint_last_step->Set(static_cast<double>(now.last_committed_step));
  if (const double stall = now.in_step_seconds - before.in_step_seconds; stall > 0)
    m.checkpoint_stall->Observe(stall);
  // The writer books each checkpoint's write when it is committed; two committed at one boundary
  // share the time booked with them.
  if (const double write = now.write_seconds - before.write_seconds; finished > 0 && write > 0)
    for (int64_t i = 0; i < finished; ++i)
      m.checkpoint_write->Observe(write / static_cast<double>(finished));
  m.checkpoint_bytes->Increment(static_cast<double>(now.bytes - before.bytes));
  m.last_checkpoints = now;
}

void RankMetrics::record_comm_fault(CommFaultKind kind) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  m.faults.at(kind)->Increment();
}

void RankMetrics::update_memory() {
  const double memory = static_cast<double>(resident_memory_bytes());
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  m.memory->Set(memory);
}

std::string RankMetrics::exposition() const {
  return prometheus::TextSerializer().Serialize(impl_->snapshot->Collect());
}

uint64_t resident_memory_bytes() {
  std::FILE* file = std::fopen("/proc/self/statm", "r");
  if (!file) return 0;
  unsigned long long size_pages = 0, resident_pages = 0;
  const int read = std::fscanf(file, "%llu %llu", &size_pages, &resident_pages);
  std::fclose(file);
  if (read != 2) return 0;
  return static_cast<uint64_t>(resident_pages) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace tandem::monitoring
