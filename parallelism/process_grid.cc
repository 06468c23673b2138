// Grid arithmetic, the up-front checks, and the group splits.
#include "parallelism/process_grid.h"

#include <algorithm>

namespace tandem::parallel {

GridCoords coords_of(const GridShape& shape, int world_rank) {
  GridCoords c;
  c.stage = world_rank / shape.dp;
  c.dp_index = world_rank % shape.dp;
  c.ep_index = c.dp_index % shape.ep;
  c.edp_index = c.dp_index / shape.ep;
  return c;
}

int world_rank_of(const GridShape& shape, int stage, int dp_index) {
  return stage * shape.dp + dp_index;
}

GridShape make_grid_shape(int world_size, const Config& config) {
  const ParallelConfig& p = config.parallel;
  const ModelConfig& m = config.model;
  TANDEM_USER_CHECK(world_size > 1 || p.pp == 1, "parallel.pp = ", p.pp, " needs a multiple of ",
                    p.pp,
                    " ranks, but this process runs alone; start it under a launcher, e.g. mpirun "
                    "-np ",
                    p.pp, " tandem-train ...");
  TANDEM_USER_CHECK(world_size % p.pp == 0, "the world of ", world_size,
                    " ranks is not divisible by parallel.pp = ", p.pp,
                    "; start a multiple of pp ranks or change parallel.pp");
  GridShape shape;
  shape.pp = static_cast<int>(p.pp);
  shape.dp = world_size / shape.pp;
  shape.ep = static_cast<int>(p.ep);
  TANDEM_USER_CHECK(shape.dp % shape.ep == 0, "parallel.ep = ", p.ep,
                    " does not divide the data-parallel size dp = world ", world_size, " / pp ",
                    p.pp, " = ", shape.dp);
  if (m.n_dense_layers < m.n_layers)
    TANDEM_USER_CHECK(m.n_routed_experts % shape.ep == 0, "parallel.ep = ", p.ep,
                      " does not divide model.n_routed_experts = ", m.n_routed_experts);
  const ScheduleKind kind = p.schedule;
  validate_schedule_request(kind, shape.pp, p.microbatches);
  const int stages = PipelineLayout(kind, shape.pp).n_stages();
  TANDEM_USER_CHECK(m.n_layers >= stages, "model.n_layers = ", m.n_layers, " is fewer than the ",
                    stages, " pipeline stages of ", choice_name(p.schedule),
                    " with parallel.pp = ", p.pp, "; every stage needs at least one layer");
  const int64_t sequences_per_microbatch = config.train.batch_size / (shape.dp * p.microbatches);
  TANDEM_USER_CHECK(sequences_per_microbatch * shape.dp * p.microbatches == config.train.batch_size,
                    "train.batch_size = ", config.train.batch_size,
                    " sequences do not split evenly over dp = ", shape.dp,
                    " data-parallel ranks × parallel.microbatches = ", p.microbatches,
                    "; make batch_size a multiple of ", shape.dp * p.microbatches);
  return shape;
}

ChunkSpec stage_chunk_spec(const ModelConfig& model, int stage, int n_stages, ExpertShard experts) {
  ChunkSpec spec;
  spec.first_layer = model.n_layers * stage / n_stages;
  spec.last_layer = model.n_layers * (stage + 1) / n_stages;
  spec.has_embedding = stage == 0;
  spec.has_head = stage == n_stages - 1;
  spec.experts = experts;
  return spec;
}

ProcessGrid::ProcessGrid(GridShape shape, ScheduleKind schedule, int world_rank,
                         comm::Communicator& pipeline_world, comm::Communicator& expert_world,
                         comm::Communicator& data_world)
    : shape_(shape),
      coords_(coords_of(shape, world_rank)),
      world_rank_(world_rank),
      mirrored_(schedule == ScheduleKind::kDualPipe),
      data_world_(data_world) {
  TANDEM_CHECK(data_world.size() == shape.world(), "grid of ", shape.world(),
               " ranks over a world of ", data_world.size());
  const GridCoords& c = coords_;
  // Under DualPipe a stage and its mirror hold the same parameters: one replica set per pair.
  const int pair = mirrored_ ? std::min(c.stage, shape.pp - 1 - c.stage) : c.stage;
  pipeline_ = pipeline_world.split(c.dp_index, c.stage);
  expert_ = expert_world.split(c.stage * shape.expert_dp() + c.edp_index, c.ep_index);
  expert_backward_ = expert_world.split(c.stage * shape.expert_dp() + c.edp_index, c.ep_index);
  dp_ = data_world.split(c.stage, c.dp_index);
  expert_dp_ = data_world.split(c.stage * shape.ep + c.ep_index, c.edp_index);
  mirror_ = data_world.split(pair * shape.dp + c.dp_index, c.stage);
  dense_replicas_ = data_world.split(pair, world_rank);
  expert_replicas_ = data_world.split(pair * shape.ep + c.ep_index, world_rank);
}

}  // namespace tandem::parallel
