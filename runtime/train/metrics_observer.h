// Connects the trainer to a rank's metrics (monitoring/): every step's record and the engine's
// report of it, every evaluation and the checkpoint writer's totals go into the registry; and the
// targets file that tells Prometheus where every rank's endpoint is.
#pragma once

#include <string>

#include "comm/communicator.h"
#include "monitoring/metrics.h"
#include "monitoring/status_page.h"
#include "monitoring/targets_file.h"
#include "runtime/core/config.h"
#include "runtime/train/trainer.h"

namespace tandem {

// Registers the trainer's observers that record into `metrics` (which must outlive the run).
// `flops_per_token` is the model's training FLOPs per token (ModelStats); the job's FLOP/s are
// shared evenly over `world_size` ranks for the utilisation.
void record_training_metrics(Trainer& trainer, monitoring::RankMetrics& metrics,
                             double flops_per_token, int world_size);

// Feeds rank 0's live page (/status): every published status, evaluation and expert load.
void feed_status_page(Trainer& trainer, monitoring::StatusPage& page);

// Where the engine puts this rank: its stage and the MoE layers whose load it reports.
monitoring::RankPlace metrics_place(const TrainEngine& engine, const ModelConfig& model);

// Gathers every rank's target over `world` (collective; null: this process alone) and, on rank
// 0, writes config.monitoring.sd_file when it is set. Throws an Error naming the file if it
// cannot be written.
void publish_scrape_targets(const MonitoringConfig& config, comm::Communicator* world,
                            const monitoring::ScrapeTarget& mine);

}  // namespace tandem
