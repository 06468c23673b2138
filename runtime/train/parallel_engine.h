// The multi-rank training engine: this rank's model chunks on the process grid, the schedule's
// instruction list run by the pipeline executor, expert dispatch over the expert group, gradient
// reduction and (optionally ZeRO-1) AdamW over the replicas. It sees the same global batch as
// the single-process engine: each data-parallel rank takes an equal slice of its sequences, split
// into micro-batches, and every reduction (loss, gradient, gradient norm, router load) sums over
// exactly the ranks that hold the same thing. With train.device = "cuda" each rank trains on its
// node's GPU of its local rank: gradient buckets, activations and AdamW's moments on the device,
// the reductions on NCCL, and the host values (loss, norm, boundary agreement) over the world
// the job joined.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/expert_dispatch.h"
#include "comm/ordered_channels.h"
#include "comm/traffic.h"
#include "parallelism/executor.h"
#include "parallelism/gradient_sync.h"
#include "parallelism/process_grid.h"
#include "runtime/train/data.h"
#include "runtime/train/train_engine.h"

namespace tandem {

// The MoE blocks of several chunks in layer order: the order in which every replica of the
// layers lays out their expert loads for one all-reduce.
std::vector<MoeFfnBlock*> moe_blocks_by_layer(
    const std::vector<std::unique_ptr<ModelChunk>>& chunks);

// What train.device = "cuda" cannot run, refused as a configuration error before any rank talks:
// expert rows staged in the node's host shared memory (comm.dispatch = "hierarchical",
// comm.expert_exchange = "shared_memory"); on the GPU they move as NCCL messages.
void check_device_grid(const Config& config, int world_size);

struct ParallelEngineOptions {
  std::string trace_path;  // Chrome trace of the last training step, written by rank 0
  // Replaces the expert groups the dispatchers talk over (tests wrap them to inject latency).
  std::function<std::unique_ptr<comm::Communicator>(comm::Communicator&)> wrap_expert_group;
  // Receives every step's events (instructions, pipeline messages, all-to-alls, weight gradients,
  // reductions) when set; tests observe the schedule with it.
  StepEventLog* events = nullptr;
  // The pipeline's messages on ordered channels on the CPU too, matched by order as NCCL
  // matches them (tests run the GPU's pipeline transport on MPI and UCX with it).
  bool ordered_pipeline_channels = false;
  // An embedding program's tokens instead of data.path's files.
  std::shared_ptr<const DataSource> data_source;
};

class ParallelEngine final : public TrainEngine {
 public:
  // Collective: every rank of the world builds its engine together.
  ParallelEngine(const Config& config, comm::World& world, ParallelEngineOptions options = {});
  ~ParallelEngine() override;
  StepReport train_step(int64_t step) override;
  double evaluate() override;
  bool reports() const override { return world_rank_ == 0; }
  nlohmann::json summary_fields() const override;
  void finish() override;
  TrainingState state() override;
  void set_steps_taken(int64_t steps) override;
  nlohmann::json grid_description() const override;
  comm::Communicator* job_world() override;
  int pipeline_stage() const override;
  std::vector<int64_t> expert_load_layers() const override;

  const parallel::ProcessGrid& grid() const { return *grid_; }
  const parallel::Schedule& schedule() const { return schedule_; }
  // This rank's parameters (names are global, as in the single-process model).
  std::vector<Parameter*> parameters();
  // The timeline of the last training step on this rank.
  const parallel::StepTimeline& last_timeline() const { return last_timeline_; }

 private:
  parallel::MicroBatches microbatches(Split split, int64_t batch) const;
  void write_trace();
  uint64_t store_requests() const;
  uint64_t recorded_operations() const;
  void note_expert_exchange(bool shared, const std::string& why_not, const char* what);

  Config config_;
  ParallelEngineOptions options_;
  int world_rank_;
  Device device_;  // this rank's: the CPU, or its local GPU
  comm::BackendWorlds backends_;
  parallel::GridShape shape_;
  parallel::Schedule schedule_;
  std::unique_ptr<parallel::ProcessGrid> grid_;
  std::unique_ptr<comm::OrderedChannels> pipeline_channels_;  // on NCCL: the pipeline's
  DataLoader loader_;
  std::vector<std::unique_ptr<ModelChunk>> chunks_;
  std::vector<std::unique_ptr<comm::Communicator>> wrapped_expert_groups_;
  std::unique_ptr<comm::ExpertDispatcher> forward_dispatcher_, backward_dispatcher_;
  std::unique_ptr<comm::HierarchicalDispatcher> hierarchical_dispatcher_;
  std::unique_ptr<parallel::PipelineExecutor> executor_;
  std::unique_ptr<parallel::GradientSync> sync_;
  std::unique_ptr<AdamW> optimizer_;      // over sync_'s update slices
  std::vector<MoeFfnBlock*> moe_blocks_;  // of every local chunk, by layer index
  std::vector<parallel::Instruction> eval_program_;
  parallel::StepTimeline last_timeline_;
  int64_t steps_ = 0;
  double bubble_sum_ = 0;  // over steps after the first (which includes warm-up)
  double step_seconds_ = 0;
  parallel::AllToAllStats all_to_all_;
  // What the watchdog costs: store requests and recorded operations over the training steps.
  std::shared_ptr<comm::Watchdog> watchdog_;
  // Where host values (loss, gradient norm, statistics, the boundary's agreement) are reduced:
  // the data-parallel world on the CPU; on the GPU, whose data world is NCCL's, the joined one.
  comm::Communicator* host_world_ = nullptr;
  uint64_t step_store_requests_ = 0, step_operations_ = 0;
  std::string expert_exchange_ = "none";  // how expert rows moved: shared_memory or messages
  nlohmann::json finished_fields_ = nlohmann::json::object();
};

}  // namespace tandem
