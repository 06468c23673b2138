// The trainer's observers that fill a rank's registry, and the gathering of the scrape targets.
#include "runtime/train/metrics_observer.h"

#include "runtime/core/logging.h"

namespace tandem {

void record_training_metrics(Trainer& trainer, monitoring::RankMetrics& metrics,
                             double flops_per_token, int world_size) {
  trainer.add_step_observer([&metrics, flops_per_token, world_size](const StepRecord& r) {
    monitoring::StepValues v;
    v.step = r.step;
    v.loss = r.loss;
    v.learning_rate = r.lr;
    v.grad_norm = r.grad_norm;
    v.tokens = r.tokens;
    v.seconds = r.seconds;
    v.flops_per_second = r.seconds > 0 ? flops_per_token * static_cast<double>(r.tokens) /
                                             r.seconds / static_cast<double>(world_size)
                                       : 0;
    const StepReport& e = r.report;
    v.bubble_ratio = e.bubble_fraction;
    v.dispatch_bytes = e.dispatch_bytes;
    v.combine_bytes = e.combine_bytes;
    v.dispatch_exposed_seconds = e.dispatch_exposed_seconds;
    v.combine_exposed_seconds = e.combine_exposed_seconds;
    v.pipeline_sent_bytes = e.pipeline_sent_bytes;
    v.pipeline_received_bytes = e.pipeline_received_bytes;
    for (const ExpertLoad& load : e.expert_load) v.expert_tokens.push_back(load.tokens);
    v.fp8_values = e.fp8.values;
    v.fp8_saturated = e.fp8.saturated;
    v.compute_seconds = r.times.compute;
    v.all_to_all_wait_seconds = r.times.all_to_all_wait;
    v.pipeline_wait_seconds = r.times.pipeline_wait;
    v.sync_wait_seconds = r.times.sync_wait;
    v.straggler = r.straggler.straggler;
    v.relative_speed = r.straggler.score;
    metrics.record_step(v);
  });
  trainer.add_evaluation_observer(
      [&metrics](const EvaluationRecord& r) { metrics.record_evaluation(r.loss, r.seconds); });
  trainer.add_checkpoint_observer([&metrics](const CheckpointWriter::Stats& s) {
    monitoring::CheckpointTotals totals;
    totals.committed = s.committed;
    totals.failed = s.failed;
    totals.last_committed_step = s.last_committed_step;
    totals.in_step_seconds = s.copy_seconds + s.wait_seconds + s.poll_seconds + s.commit_seconds;
    totals.write_seconds = s.write_seconds;
    totals.bytes = s.bytes;
    metrics.record_checkpoints(totals);
  });
}

void feed_status_page(Trainer& trainer, monitoring::StatusPage& page) {
  trainer.add_status_observer([&page](const monitoring::JobStatus& s) { page.update(s); });
  trainer.add_evaluation_observer(
      [&page](const EvaluationRecord& r) { page.record_evaluation(r.step, r.loss); });
  trainer.add_step_observer([&page](const StepRecord& r) {
    for (const ExpertLoad& load : r.report.expert_load)
      page.record_expert_load(load.layer, load.tokens);
  });
}

monitoring::RankPlace metrics_place(const TrainEngine& engine, const ModelConfig& model) {
  return {engine.pipeline_stage(), engine.expert_load_layers(), model.n_routed_experts};
}

void publish_scrape_targets(const MonitoringConfig& config, comm::Communicator* world,
                            const monitoring::ScrapeTarget& mine) {
  const std::string encoded = monitoring::encode_target(mine);
  const std::vector<std::string> all =
      world ? comm::gather_strings(*world, encoded, 0) : std::vector<std::string>{encoded};
  if ((world && world->rank() != 0) || config.sd_file.empty()) return;
  std::vector<monitoring::ScrapeTarget> targets;
  for (const std::string& text : all) targets.push_back(monitoring::decode_target(text));
  monitoring::write_targets_file(config.sd_file, targets, config.job);
  log_info("metrics: ", targets.size(), " scrape target", targets.size() == 1 ? "" : "s",
           " (job \"", config.job, "\") written to ", config.sd_file);
}

}  // namespace tandem
