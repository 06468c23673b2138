// The table of every metric family, and the Markdown reference printed from it.
#include "monitoring/metric_catalog.h"

#include <cmath>
#include <cstdio>

#include "runtime/core/errors.h"

namespace tandem::monitoring {

namespace {

// Durations differ by orders of magnitude between a tiny CPU model and a large GPU job, so the
// buckets are a 1-2-5 series over `n_decades` decades from 10^first_exponent. Each bound is a
// quotient or product of exact integers, so it is the double nearest its decimal (0.005, not
// 0.005000000000000001) and the `le` labels read as written.
std::vector<double> decades(int first_exponent, int n_decades) {
  std::vector<double> out;
  for (int e = first_exponent; e < first_exponent + n_decades; ++e)
    for (double m : {1.0, 2.0, 5.0})
      out.push_back(e < 0 ? m / std::pow(10.0, -e) : m * std::pow(10.0, e));
  out.push_back(std::pow(10.0, first_exponent + n_decades));
  return out;
}

constexpr MetricType kCounter = MetricType::kCounter;
constexpr MetricType kGauge = MetricType::kGauge;
constexpr MetricType kHistogram = MetricType::kHistogram;

const MetricLabel kDirectionA2a{
    "direction",
    "`dispatch`: rows to the experts (the forward dispatch and the combine's backward); "
    "`combine`: rows back to their tokens (the forward combine and the dispatch's backward)"};

}  // namespace

std::string_view metric_type_name(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "?";
}

const std::vector<MetricSpec>& metric_catalog() {
  static const std::vector<MetricSpec> catalog = {
      {"tandem_build_info",
       kGauge,
       "",
       {{"version", "the CMake project version"},
        {"commit", "the git commit the build was configured at (`unknown` outside a checkout)"}},
       "Always 1; its labels say which build of tandem this rank runs.",
       {}},
      {"tandem_steps_total",
       kCounter,
       "steps",
       {},
       "Optimizer steps this process has completed (a restarted or resumed process counts from "
       "0; tandem_step is the job's step number).",
       {}},
      {"tandem_step",
       kGauge,
       "steps",
       {},
       "The job's optimizer step count after the last completed step (a resumed run continues "
       "from its checkpoint's); NaN before this process's first step.",
       {}},
      {"tandem_tokens_total",
       kCounter,
       "tokens",
       {},
       "Tokens of the global batch trained since this process started. Every rank counts the "
       "whole global batch, so rate() on any one rank is the job's tokens per second.",
       {}},
      {"tandem_loss",
       kGauge,
       "nats per token",
       {},
       "Mean training cross-entropy over the last step's global batch (the same on every rank); "
       "NaN before the first step.",
       {}},
      {"tandem_eval_loss",
       kGauge,
       "nats per token",
       {},
       "Mean held-out cross-entropy of the last evaluation (train.eval_interval); NaN before the "
       "first.",
       {}},
      {"tandem_eval_seconds",
       kHistogram,
       "seconds",
       {},
       "Wall time of each held-out evaluation on this rank.",
       decades(-2, 5)},
      {"tandem_learning_rate",
       kGauge,
       "",
       {},
       "Learning rate of the last step; NaN before the first.",
       {}},
      {"tandem_grad_norm",
       kGauge,
       "",
       {},
       "Global gradient norm of the last step, before clipping; NaN before the first.",
       {}},
      {"tandem_step_seconds",
       kHistogram,
       "seconds",
       {},
       "Wall time of each training step on this rank, its step-boundary work included (the stop "
       "agreement, a checkpoint's copy and polls).",
       decades(-3, 5)},
      {"tandem_model_flops_utilization_ratio",
       kGauge,
       "ratio (0..1)",
       {},
       "Model FLOP utilisation of the last step: the job's training FLOP/s (flops_per_token of "
       "the model times the global batch's tokens, over the step's seconds) divided evenly over "
       "its ranks, over this rank's tandem_peak_flops, which is measured at startup with OpenBLAS "
       "sgemm on this rank's threads (not a datasheet peak). NaN before the first step, and "
       "throughout a train.device = \"cuda\" run (no GPU ceiling is measured at startup).",
       {}},
      {"tandem_peak_flops",
       kGauge,
       "FLOP per second",
       {},
       "The peak tandem_model_flops_utilization_ratio divides by: the best of 3 OpenBLAS sgemm "
       "runs (1024 x 1024 x 1024, fp32) on this rank's threads at startup, while the node's other "
       "ranks measure theirs. NaN in a train.device = \"cuda\" run.",
       {}},
      {"tandem_pipeline_bubble_ratio",
       kGauge,
       "ratio (0..1)",
       {{"stage",
         "this rank's place in the pipeline, 0 .. parallel.pp - 1 (under DualPipe it also holds "
         "stage pp - 1 - stage)"}},
       "Fraction of the last step this rank spent outside its instructions or waiting in them "
       "for pipeline messages (1 - busy / step time); 0 in one process.",
       {}},
      {"tandem_alltoall_bytes_total",
       kCounter,
       "bytes",
       {kDirectionA2a},
       "Bytes this rank sent to other ranks in expert all-to-alls (under comm.dispatch = "
       "\"hierarchical\", the rows that crossed nodes); 0 without expert parallelism.",
       {}},
      {"tandem_alltoall_exposed_seconds",
       kHistogram,
       "seconds",
       {kDirectionA2a},
       "Per step: time this rank was blocked on expert all-to-alls of the direction with no other "
       "work to run, i.e. communication the F&B overlap did not hide (a wait ended by two "
       "exchanges at once is split between them).",
       decades(-4, 5)},
      {"tandem_step_phase_seconds_total",
       kCounter,
       "seconds",
       {{"phase",
         "`compute` (the step minus the waits), `alltoall_wait` (blocked on expert all-to-alls "
         "the overlap did not hide), `pipeline_wait` (idle or waiting for pipeline messages) or "
         "`sync_wait` (gradient reduction, loss and norm reductions, the ZeRO-1 gather)"}},
       "This rank's training steps split into its own compute and its waits on peers (the step "
       "boundary's work excluded); rate() of each phase over rate() of their sum is its share of "
       "the step. A rank whose compute share is high while its peers wait is the slow one.",
       {}},
      {"tandem_straggler",
       kGauge,
       "0 or 1",
       {},
       "1 while this rank is named a straggler: the median over monitoring.straggler_window steps "
       "of its compute time over the other ranks' median compute reached "
       "monitoring.straggler_ratio (it is cleared below halfway back to 1). Every rank sees every "
       "rank's times on the step boundary's agreement, so all agree on who is named.",
       {}},
      {"tandem_relative_speed_ratio",
       kGauge,
       "ratio (0..1)",
       {},
       "This rank's speed relative to the others: the median over monitoring.straggler_window "
       "steps of the other ranks' median compute over its own, at most 1 (1: as fast as the "
       "others or faster). 1 in one process.",
       {}},
      {"tandem_pipeline_bytes_total",
       kCounter,
       "bytes",
       {{"direction", "`send` or `recv`: activations and gradients to or from pipeline peers"}},
       "Bytes of pipeline messages this rank sent or received (hand-overs between two stages of "
       "the same rank are not messages and are not counted).",
       {}},
      {"tandem_expert_tokens_total",
       kCounter,
       "tokens",
       {{"layer", "the MoE layer's index in the model"},
        {"expert", "the routed expert's index, 0 .. model.n_routed_experts - 1"}},
       "Tokens of the global batch routed to each expert (a token counts once for each of its "
       "top_k experts). One rank per layer exports it, the first data-parallel replica of the "
       "stage holding the layer, so a sum over ranks counts each token once; the other ranks have "
       "no series of this family.",
       {}},
      {"tandem_fp8_values_total",
       kCounter,
       "values",
       {},
       "Values this rank quantised to FP8 in training steps (0 unless fp8.enabled).",
       {}},
      {"tandem_fp8_saturated_values_total",
       kCounter,
       "values",
       {},
       "Of tandem_fp8_values_total, those beyond the format's largest finite value after scaling, "
       "clamped to it.",
       {}},
      {"tandem_resident_memory_bytes",
       kGauge,
       "bytes",
       {},
       "Resident memory of this process (/proc/self/statm), read at startup and after every step.",
       {}},
      {"tandem_restarts_total",
       kCounter,
       "restarts",
       {},
       "Restarts of the job before this process's attempt (TANDEM_RESTART_COUNT from "
       "tandem-launch, or SLURM_RESTART_COUNT when slurm requeued the job; 0 otherwise). Each "
       "attempt starts at its own count, so increase() over a range counts the restarts in it.",
       {}},
      {"tandem_checkpoints_total",
       kCounter,
       "checkpoints",
       {{"outcome", "`committed` (every rank's shard written, the manifest in place) or `failed`"}},
       "Checkpoints this process finished (checkpoint.dir).",
       {}},
      {"tandem_checkpoint_last_step",
       kGauge,
       "steps",
       {},
       "Step of the newest checkpoint this process committed; NaN before the first.",
       {}},
      {"tandem_checkpoint_stall_seconds",
       kHistogram,
       "seconds",
       {},
       "Time the training thread spent on checkpoints at one step boundary (copying the state to "
       "host memory, waiting for an earlier write, polling, committing), observed at each "
       "boundary that did any of it.",
       decades(-3, 5)},
      {"tandem_checkpoint_write_seconds",
       kHistogram,
       "seconds",
       {},
       "Writing and fsyncing this rank's shard of one checkpoint (in the background when "
       "checkpoint.async).",
       decades(-2, 5)},
      {"tandem_checkpoint_bytes_total",
       kCounter,
       "bytes",
       {},
       "Bytes of checkpoint shards this rank wrote.",
       {}},
      {"tandem_comm_faults_total",
       kCounter,
       "faults",
       {{"kind",
         "`timeout` (a collective or send/recv passed comm.timeout_s), `peer_lost` or "
         "`store_lost`"}},
       "Communication faults that stopped this process. It exits soon after (code 3), so only a "
       "scrape in between sees the count; the store's host (rank 0 without a launcher) stays up "
       "to comm.timeout_s longer for its peers' reports.",
       {}},
      {"tandem_launcher_rank_answered",
       kGauge,
       "",
       {},
       "1 when the rank answered this scrape of its node's endpoint in time (all of a node's "
       "ranks get 2 s together), 0 when it did not: frozen, stopped, restarting, or not serving "
       "yet (before it knows its place in the grid). Its other series are missing from a scrape "
       "where this is 0. One series per local rank of the attempt the launcher runs.",
       {},
       true},
  };
  return catalog;
}

const MetricSpec& metric_spec(std::string_view name) {
  for (const MetricSpec& spec : metric_catalog())
    if (spec.name == name) return spec;
  TANDEM_FAIL("metric '", name, "' is not in monitoring/metric_catalog.cc");
}

std::string metrics_reference_markdown() {
  std::string out =
      "# Metrics reference\n\n"
      "Generated by `tandem-train --metrics-reference` from monitoring/metric_catalog.cc; a test "
      "keeps this file equal to that output.\n\n"
      "With `monitoring.metrics_port` set, each rank serves these on "
      "`http://monitoring.bind:(metrics_port + LOCAL_RANK)/metrics` in the Prometheus text "
      "format; under tandem-launch no rank binds a port: each node's launcher serves one "
      "endpoint, `http://monitoring.bind:metrics_port/metrics`, holding every local rank's "
      "series (each family's HELP and TYPE once), which it asks its ranks for over a local "
      "socket at each scrape, plus the launcher's own families below. Every family is in a "
      "rank's exposition from the first successful scrape, which comes once the rank knows its "
      "place in the grid (before that its own endpoint answers 404, and the node endpoint leaves "
      "it out); a value not measured yet is NaN. Every series carries `rank` (the process's rank "
      "in the job) and `node` (its host name); the labels below are added to those. The targets "
      "file (`monitoring.sd_file`) gives Prometheus `job` (`monitoring.job`) and `node`, and, "
      "one target per rank without tandem-launch, `rank`; under tandem-launch it holds one "
      "target per node, without `rank`. Counters count from this process's start; durations are "
      "histograms (`_bucket`, `_sum`, `_count`), so rates and means come from `rate()` in the "
      "dashboard (monitoring/dashboards/tandem.json). Each rank's part of a scrape is one "
      "consistent snapshot: the values of one step are updated together.\n\n"
      "| metric | type | unit | labels | meaning |\n|---|---|---|---|---|\n";
  const std::string table_head =
      "| metric | type | unit | labels | meaning |\n|---|---|---|---|---|\n";
  bool launcher_section = false;
  for (const MetricSpec& spec : metric_catalog()) {
    // The launcher's families come last in the catalog, under a heading of their own.
    if (spec.from_launcher && !launcher_section) {
      launcher_section = true;
      out +=
          "\n## Served by tandem-launch\n\nThe node endpoint adds these to its ranks' "
          "families; a rank's own endpoint does not have them. Their `rank` and `node` are "
          "the local rank's, as on its other series.\n\n" +
          table_head;
    }
    TANDEM_CHECK(spec.from_launcher == launcher_section,
                 "the launcher's families come after every rank's in the catalog");
    std::string labels;
    for (const MetricLabel& label : spec.labels)
      labels += detail::concat(labels.empty() ? "" : "; ", "`", label.name, "`: ", label.meaning);
    std::string help(spec.help);
    if (!spec.buckets.empty()) {
      help += " Buckets (upper bounds):";
      for (double b : spec.buckets) {
        char text[32];
        std::snprintf(text, sizeof text, " %g", b);
        help += text;
      }
      help += ".";
    }
    out += detail::concat("| `", spec.name, "` | ", metric_type_name(spec.type), " | ", spec.unit,
                          " | ", labels, " | ", help, " |\n");
  }
  return out;
}

}  // namespace tandem::monitoring
