// The process grid: world = pp × dp ranks. Inside each pipeline stage the dp ranks are data
// parallel for the dense parameters and split into expert groups of ep consecutive ranks (expert
// data parallelism = dp / ep). Rank order puts the expert group innermost and the pipeline
// outermost: rank = stage·dp + edp_index·ep + ep_index. Every group a job needs is split once,
// after every number has been checked.
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "parallelism/schedule.h"
#include "runtime/core/config.h"
#include "runtime/model/model_chunk.h"

namespace tandem::parallel {

struct GridShape {
  int pp = 1;
  int dp = 1;
  int ep = 1;
  int world() const { return pp * dp; }
  int expert_dp() const { return dp / ep; }
};

struct GridCoords {
  int stage = 0;  // pipeline rank
  int dp_index = 0;
  int ep_index = 0;   // position in the expert group
  int edp_index = 0;  // which expert group of the stage
};

GridCoords coords_of(const GridShape& shape, int world_rank);
int world_rank_of(const GridShape& shape, int stage, int dp_index);

// Derives dp from the world size and checks every combination (divisibility of the world, the
// experts, the batch; the schedule's micro-batch and pp rules; enough layers for the stages)
// before any communicator is built. Throws naming the numbers and the keys to change.
GridShape make_grid_shape(int world_size, const Config& config);

// The layers (and embedding/head) of model stage `stage` of `n_stages`, holding expert slice
// `experts`: layers are spread evenly, the earlier stages taking one fewer when they do not divide.
ChunkSpec stage_chunk_spec(const ModelConfig& model, int stage, int n_stages, ExpertShard experts);

class ProcessGrid {
 public:
  // Collective over all three worlds (which may be the same communicator): splits every group.
  ProcessGrid(GridShape shape, ScheduleKind schedule, int world_rank,
              comm::Communicator& pipeline_world, comm::Communicator& expert_world,
              comm::Communicator& data_world);
  const GridShape& shape() const { return shape_; }
  const GridCoords& coords() const { return coords_; }
  int world_rank() const { return world_rank_; }
  // DualPipe holds every stage twice (on ranks r and pp−1−r), so replicas span the mirror pair.
  bool mirrored() const { return mirrored_; }

  comm::Communicator& pipeline() { return *pipeline_; }  // same dp index, ordered by stage
  const comm::Communicator& pipeline() const { return *pipeline_; }
  comm::Communicator& dp() { return *dp_; }          // this stage's dp ranks
  comm::Communicator& expert() { return *expert_; }  // this rank's expert group
  // The same ranks again, for backward all-to-alls that run while a forward's are in flight.
  comm::Communicator& expert_backward() { return *expert_backward_; }
  comm::Communicator& expert_dp() { return *expert_dp_; }  // same expert slice in this stage
  comm::Communicator& mirror() { return *mirror_; }        // ranks r and pp−1−r (DualPipe)
  // Every rank that holds the same dense parameters (dp, plus the mirror stage under DualPipe)
  // and the same experts (expert dp, plus the mirror): gradients are summed over these.
  comm::Communicator& dense_replicas() { return *dense_replicas_; }
  comm::Communicator& expert_replicas() { return *expert_replicas_; }
  comm::Communicator& data_world() { return data_world_; }

 private:
  GridShape shape_;
  GridCoords coords_;
  int world_rank_;
  bool mirrored_;
  comm::Communicator& data_world_;
  std::unique_ptr<comm::Communicator> pipeline_, dp_, expert_, expert_backward_, expert_dp_,
      mirror_, dense_replicas_, expert_replicas_;
};

}  // namespace tandem::parallel
