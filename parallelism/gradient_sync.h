// Data-parallel gradient reduction and the optimizer step over replicated parameters, with
// optional ZeRO-1. Each bucket — one block's parameters held by the same group of ranks (dense
// ones over dp, plus the DualPipe mirror; experts over expert dp) — gets one flat gradient buffer
// that the parameters' grad tensors are views of, so nothing is copied before the reduction. A
// bucket's reduction starts as soon as the executor reports its block's last weight gradient of
// the step, so it overlaps the rest of the backward; buckets start in one global order (the same
// on every rank of a group, as collectives must). With ZeRO-1 the reduction is a reduce-scatter:
// each replica updates only its shard of the parameters (the optimizer, runtime/train/optimizer.h,
// is given the slices of them this rank owns, with views of the shard's buffers, and so keeps
// state for that shard only), then an all-gather brings every replica the whole updated set.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/step_events.h"
#include "runtime/model/block.h"

namespace tandem::parallel {

struct ReplicatedParameters {
  std::string name;  // for messages: "stage 1 block 3 dense"
  int order = 0;     // launch order, the same on every replica
  int chunk = 0;     // the local chunk whose backward produces these gradients
  size_t block = 0;  // and the block in it (ModelChunk::blocks() index; blocks().size(): head)
  comm::Communicator* group = nullptr;  // every rank holding these parameters
  std::vector<Parameter*> params;
};

class GradientSync {
 public:
  GradientSync(std::vector<ReplicatedParameters> sets, bool zero1);
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;
  ~GradientSync();

  // A block's (or a whole chunk's) gradients are final for this step: start the reductions whose
  // turn has come. Repeated reports are harmless.
  void block_ready(int chunk, size_t block);
  void chunk_ready(int chunk);
  // Starts whatever has not started and waits for every reduction.
  void finish();
  // Σ grad² over the gradient elements this rank owns after finish(): each element of the global
  // model is owned by exactly one rank, so an all-reduce of this over the world is the global
  // squared norm.
  double owned_sum_of_squares() const;
  // What this rank's optimizer updates, bucket by bucket in launch order: every parameter whole,
  // or under ZeRO-1 the part of each that falls in this rank's shard of its bucket, with views of
  // the reduced shard gradient and of the flat parameter buffer. Stable for this object's life.
  std::vector<ParameterSlice> update_slices();
  // For each of update_slices(): whether this rank is the one replica that saves it in a
  // checkpoint — every slice under ZeRO-1 (each is this rank's own shard), otherwise the
  // parameters of each bucket dealt out over its replicas in turn, so every rank writes a share.
  std::vector<bool> saved_here() const;
  // After the optimizer step: under ZeRO-1, all-gathers every bucket's updated shards so each
  // replica holds the whole updated set (nothing to do otherwise).
  void gather_parameters();
  void zero_grad();
  // Records the start of every reduction (runtime/core/step_events.h); null stops recording.
  void set_event_log(StepEventLog* log) { events_ = log; }

 private:
  struct Bucket;
  void launch_ready();
  std::vector<std::unique_ptr<Bucket>> buckets_;  // in launch order
  size_t next_launch_ = 0;
  bool zero1_;
  StepEventLog* events_ = nullptr;
};

}  // namespace tandem::parallel
