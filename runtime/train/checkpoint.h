// Checkpoints of a run, sharded by rank and resumable on any grid. Layout under checkpoint.dir:
//   step-00000040/manifest.json              written last: config, grid, step, data position,
//                                            learning-rate position, router biases, and every
//                                            shard's size, XXH64 checksum and tensors
//   step-00000040/rank-00003.safetensors     rank 3's part of the parameters and of AdamW's m
//                                            and v, under the parameters' global names
// Each parameter element is saved once: a replicated parameter by one of its replicas, a ZeRO-1
// shard by its owner. A checkpoint is written into a hidden temporary directory, every file
// fsynced, and renamed to step-NNNNNNNN only once every rank has finished (one rename by rank
// 0), so a crash at any moment leaves the previous checkpoint the newest complete one. Loading
// reads only what the loading rank holds, from whichever shards hold it, so the grid may change.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/owned_fd.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/safetensors.h"
#include "runtime/train/train_engine.h"

namespace tandem {

inline constexpr int kCheckpointFormatVersion = 1;

// "step-00000040".
std::string checkpoint_name(int64_t step);
// "rank-00003.safetensors".
std::string shard_file_name(int rank);
// The complete-looking checkpoints (step-NNNNNNNN directories) under `dir`, newest first.
std::vector<std::string> list_checkpoints(const std::string& dir);
// Whether `path` is one checkpoint (a step-NNNNNNNN directory or one holding a manifest.json)
// rather than a directory of them.
bool is_checkpoint(const std::string& path);

// Checks one checkpoint without loading it: the manifest (format, version, fields), every shard
// (present, of the recorded size and XXH64 checksum, a valid safetensors file holding the tensors
// the manifest lists) and completeness (every parameter, m and v covered exactly once). Throws an
// Error naming the file and what is wrong; returns the manifest.
nlohmann::json verify_checkpoint(const std::string& path);

// Creates checkpoint.dir if needed and checks that this process can write there; throws a
// UsageError naming the directory otherwise.
void prepare_checkpoint_dir(const std::string& dir);

// Writes checkpoints of this rank's state. Every call is collective over `world` (null: one
// process), made at the same step boundary on every rank.
class CheckpointWriter {
 public:
  struct Stats {
    int64_t saved = 0, committed = 0, failed = 0;
    // What checkpoints cost the training thread, all of it at step boundaries:
    double copy_seconds = 0;    // copying the state into the file image
    double wait_seconds = 0;    // waiting for a write still in progress
    double poll_seconds = 0;    // the all-reduces asking whether every shard is written
    double commit_seconds = 0;  // gathering, the manifest and rename (rank 0), the outcome
    double write_seconds = 0;   // in the background: writing and fsyncing this rank's shards
    uint64_t bytes = 0;         // written by this rank
    int64_t last_committed_step = -1;
  };

  // Creates checkpoint.dir and takes its lock (one job per directory), checks that every rank
  // sees the same directory (a file rank 0 writes there must be visible to all: a node-local
  // directory would otherwise give each node a checkpoint of its own ranks only), and removes
  // temporary directories of earlier attempts. A run that did not resume (`resumed_step` empty)
  // is refused a directory that already holds checkpoints; one resumed from step S moves the
  // complete checkpoints newer than S aside (abandoned-TOKEN/), so that none is ever resumed
  // by mistake. Refusals are UsageErrors, on every rank.
  CheckpointWriter(const Config& config, comm::Communicator* world, nlohmann::json grid,
                   std::optional<int64_t> resumed_step);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Starts checkpoint `step` (the count of optimizer steps in `state`): copies this rank's part
  // of it into host memory and writes it, in the background when checkpoint.async. A checkpoint
  // still in progress is finished first.
  void save(const TrainingState& state, int64_t step);
  // At every step boundary: commits the checkpoint in progress once every rank has written its
  // shard (one small all-reduce while one is in progress, nothing otherwise).
  void poll();
  // Waits for the checkpoint in progress and commits it.
  void finish();
  // Called on every rank once each checkpoint's outcome is known (committed or not), with its
  // step and directory: the control service answers a Checkpoint request from here.
  void set_on_commit(std::function<void(int64_t step, bool committed, const std::string& path)> f) {
    on_commit_ = std::move(f);
  }
  // Whether a checkpoint is being written (saved, not yet committed).
  bool in_progress() const { return pending_ != nullptr; }
  const Stats& stats() const { return stats_; }
  const std::string& dir() const { return dir_; }

 private:
  struct Pending;
  void commit();
  std::string publish(const Pending& pending, const std::vector<std::string>& shards);
  static void write_shard(Pending& pending);

  Config config_;
  comm::Communicator* world_;
  nlohmann::json grid_;
  std::string dir_;
  int rank_ = 0;
  std::string token_;  // this run's: names its temporary directories
  std::shared_ptr<Pending> pending_;
  std::shared_ptr<safetensors::FileImage> image_;  // the host copy, kept for the next one
  OwnedFd lock_;                                   // rank 0: flock of checkpoint.dir
  Stats stats_;
  std::function<void(int64_t, bool, const std::string&)> on_commit_;
};

struct LoadedCheckpoint {
  std::string path;
  int64_t step = 0;
  // The saved run's SetLearningRate, if any: the caller restores it with the step count.
  std::optional<LearningRateChange> learning_rate_change;
};

// Loads a checkpoint into `state` (collective over `world`, null: one process) and returns it,
// or nothing when `path` is a directory holding no checkpoint. `path` is one checkpoint (loaded,
// or a UsageError) unless `directory_of_checkpoints` (--resume auto's checkpoint.dir) or it is not
// one (is_checkpoint): then the newest that loads on every rank is used, and each one that does
// not is named with the file and the reason. The model must be the same (the configs' model
// sections); the grid may differ; train.seed, batch size and steps differing from the saved run
// are named in a warning. The caller then resumes the step count.
std::optional<LoadedCheckpoint> load_checkpoint(const std::string& path,
                                                bool directory_of_checkpoints, const Config& config,
                                                TrainingState& state, comm::Communicator* world);

// The full model's parameters from a checkpoint, by global name, in `dtype` (F32 or BF16), as
// one safetensors file: what `tandem-checkpoint export` writes. The checkpoint is verified as
// verify_checkpoint does, in the same single pass over its shards; an Error names what is wrong.
safetensors::FileImage export_parameters(const std::string& checkpoint, DType dtype,
                                         int64_t* elements);

}  // namespace tandem
