// Building this rank's part of the model on the grid, and one training step across the grid.
#include "runtime/train/parallel_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "comm/topology.h"
#include "kernels/optimizer.h"
#include "parallelism/pipeline_channels.h"
#include "runtime/core/device_timer.h"
#include "runtime/core/logging.h"
#include "runtime/core/output_file.h"

namespace tandem {

namespace {

using parallel::Instruction;

// This rank's device: the CPU, or the GPU of its local rank on its node (found from host
// identities over the joined world, collective there), which NCCL refuses to share between ranks.
Device engine_device(const Config& config, comm::World& world) {
  check_device_grid(config, world.comm->size());
  if (config.train.device == DeviceType::kCPU) return Device::cpu();
  require_device(DeviceType::kCUDA);
  comm::Communicator& group = *world.comm;
  const comm::Topology topology =
      comm::discover_topology(group, static_cast<int>(config.comm.ranks_per_node));
  const int index = comm::local_cuda_device(topology);
  // Every rank sees every rank's choice, so all of them refuse together instead of NCCL hanging
  // or failing on some ("duplicate GPU") when a node has more ranks than GPUs.
  Tensor mine = Tensor::empty({1}, DType::kI64);
  mine.data<int64_t>()[0] = cuda_device_identity(index);
  Tensor all = Tensor::empty({group.size()}, DType::kI64);
  group.all_gather(mine, all).wait();
  const int64_t* identities = all.data<int64_t>();
  if (const auto shared =
          comm::ranks_sharing_a_gpu(std::vector<int64_t>(identities, identities + group.size())))
    TANDEM_USER_FAIL("train.device = \"cuda\": ranks ", shared->first, " and ", shared->second,
                     " would share one GPU, which NCCL cannot run (this rank is local rank ",
                     topology.local_rank, " of ", topology.local_size, " and sees ",
                     cuda_device_count(), " GPUs); start at most one rank per GPU on each node, ",
                     "or give each rank its own through CUDA_VISIBLE_DEVICES");
  return Device::cuda(index);
}

}  // namespace

void check_device_grid(const Config& config, int world_size) {
  if (config.train.device == DeviceType::kCPU || config.parallel.ep == 1) return;
  const CommConfig& c = config.comm;
  // Both move expert rows through the node's host memory, which a GPU's rows are not in.
  TANDEM_USER_CHECK(
      c.dispatch == ExpertDispatchMode::kFlat, "config: comm.dispatch = \"",
      choice_name(c.dispatch), "\" stages expert rows in host shared memory, but ",
      "train.device = \"cuda\" keeps them on the GPU (parallel.ep = ", config.parallel.ep, " over ",
      world_size, " ranks); set comm.dispatch = \"flat\", which moves them as NCCL messages");
  TANDEM_USER_CHECK(c.expert_exchange != ExpertExchange::kSharedMemory,
                    "config: comm.expert_exchange = \"shared_memory\" moves expert rows through ",
                    "host memory, but train.device = \"cuda\" keeps them on the GPU; set ",
                    "comm.expert_exchange = \"messages\" or \"auto\" (NCCL messages there)");
}

std::vector<MoeFfnBlock*> moe_blocks_by_layer(
    const std::vector<std::unique_ptr<ModelChunk>>& chunks) {
  std::vector<MoeFfnBlock*> out;
  for (const auto& chunk : chunks)
    for (MoeFfnBlock* moe : chunk->moe_blocks()) out.push_back(moe);
  std::sort(out.begin(), out.end(),
            [](MoeFfnBlock* a, MoeFfnBlock* b) { return a->layer() < b->layer(); });
  return out;
}

// Records and logs (rank 0) how expert rows move inside a node.
void ParallelEngine::note_expert_exchange(bool shared, const std::string& why_not,
                                          const char* what) {
  expert_exchange_ =
      choice_name(shared ? ExpertExchange::kSharedMemory : ExpertExchange::kMessages);
  if (world_rank_ != 0) return;
  if (shared)
    log_info(what, " in shared memory (comm.expert_exchange = \"",
             choice_name(config_.comm.expert_exchange), "\")");
  else
    log_info(what, " as messages: ", why_not);
}

ParallelEngine::ParallelEngine(const Config& config, comm::World& world,
                               ParallelEngineOptions options)
    : config_(config),
      options_(std::move(options)),
      world_rank_(world.comm->rank()),
      device_(engine_device(config, world)),
      backends_(world, config.comm, device_.type == DeviceType::kCUDA ? device_.index : 0),
      shape_(parallel::make_grid_shape(world.comm->size(), config)),
      schedule_(parallel::make_schedule(config.parallel.schedule, shape_.pp,
                                        config.parallel.microbatches)),
      loader_(open_data_source(config, options_.data_source), config.model.seq_len),
      watchdog_(world.watchdog) {
  const DeviceType device = device_.type;
  grid_ = std::make_unique<parallel::ProcessGrid>(
      shape_, schedule_.kind, world_rank_, backends_.for_traffic(comm::Traffic::kPipeline, device),
      backends_.for_traffic(comm::Traffic::kExpert, device),
      backends_.for_traffic(comm::Traffic::kData, device));
  const parallel::GridCoords& at = grid_->coords();
  const parallel::PipelineLayout layout = schedule_.layout();
  const uint64_t seed = static_cast<uint64_t>(config.train.seed);
  std::vector<ModelChunk*> chunk_ptrs;
  for (int c = 0; c < layout.chunks_per_rank(); ++c) {
    const int stage = layout.stage_of(at.stage, c);
    chunks_.push_back(std::make_unique<ModelChunk>(
        config.model, seed,
        parallel::stage_chunk_spec(config.model, stage, layout.n_stages(),
                                   {at.ep_index, shape_.ep}),
        config.fp8, device_));
    chunk_ptrs.push_back(chunks_.back().get());
  }
  moe_blocks_ = moe_blocks_by_layer(chunks_);
  host_world_ = device_.type == DeviceType::kCPU ? &grid_->data_world() : world.comm.get();
  const bool hierarchical = config.comm.dispatch == ExpertDispatchMode::kHierarchical;
  if (shape_.ep > 1 && hierarchical) {
    const comm::Topology topology =
        comm::discover_topology(grid_->expert(), static_cast<int>(config.comm.ranks_per_node));
    if (world_rank_ == 0)
      log_info("topology: the expert group spans ", topology.nodes, " node",
               topology.nodes == 1 ? "" : "s", " of ", topology.local_size, " ranks (",
               config.comm.ranks_per_node > 0 ? "comm.ranks_per_node" : "from host identities",
               ")");
    hierarchical_dispatcher_ = std::make_unique<comm::HierarchicalDispatcher>(
        grid_->expert(), topology, config.model.n_routed_experts, config.comm.expert_exchange,
        comm_timeout_ms(config.comm));
    note_expert_exchange(hierarchical_dispatcher_->fan_out_in_shared_memory(),
                         hierarchical_dispatcher_->why_fan_out_as_messages(),
                         "expert rows fan out inside a node");
    if (world_rank_ == 0 && config.fp8.enabled)
      log_warn(
          "comm.dispatch = \"hierarchical\" moves expert inputs in fp32 (the FP8 payload is "
          "implemented for \"flat\"); the experts still compute in FP8");
  }
  if (shape_.ep > 1 && !hierarchical) {
    std::string why_not = "train.device = \"cuda\" moves them as NCCL messages";
    std::shared_ptr<comm::NodeSharedMemory> shared;
    if (device == DeviceType::kCPU)
      shared = comm::shared_memory_for_rows(grid_->expert(), config.comm.expert_exchange,
                                            static_cast<int>(config.comm.ranks_per_node),
                                            comm_timeout_ms(config.comm), &why_not);
    note_expert_exchange(shared != nullptr, why_not, "expert rows move");
    auto dispatcher = [&](comm::Communicator& group) {
      comm::Communicator* used = &group;
      if (options_.wrap_expert_group) {
        wrapped_expert_groups_.push_back(options_.wrap_expert_group(group));
        used = wrapped_expert_groups_.back().get();
      }
      return std::make_unique<comm::ExpertDispatcher>(*used, config.model.n_routed_experts, shared);
    };
    forward_dispatcher_ = dispatcher(grid_->expert());
    backward_dispatcher_ = dispatcher(grid_->expert_backward());
  }
  std::vector<parallel::ChunkComm> chunk_comm(
      chunks_.size(), parallel::ChunkComm{forward_dispatcher_.get(), backward_dispatcher_.get(),
                                          hierarchical_dispatcher_.get(), nullptr});
  // NCCL pairs messages by order alone: each channel of the pipeline becomes a group of its own,
  // once the programs this job runs (training, evaluation) are known to keep every channel in
  // order. Host backends match by tag and need none, unless a test asks for the CPU twin.
  comm::Communicator* pipeline = &grid_->pipeline();
  if (shape_.pp > 1 && (device != DeviceType::kCPU || options_.ordered_pipeline_channels)) {
    const std::vector<parallel::PipelineChannel> channels = parallel::pipeline_channels(
        layout, {schedule_.ranks, parallel::forward_only(layout, config.parallel.microbatches)});
    pipeline_channels_ = std::make_unique<comm::OrderedChannels>(
        *pipeline, parallel::pipeline_message_classes(layout), parallel::channel_rounds(channels));
    pipeline = pipeline_channels_.get();
    if (world_rank_ == 0)
      log_info("pipeline messages on ", channels.size(),
               " ordered channels (a two-rank group each)");
  }
  executor_ = std::make_unique<parallel::PipelineExecutor>(layout, at.stage, *pipeline, chunk_ptrs,
                                                           chunk_comm, config.parallel.overlap);

  // One bucket per (block, dense or expert) of each chunk. Later stages and later blocks finish
  // their backward first (under DualPipe, chunk 1 before chunk 0), so they are reduced first.
  std::vector<parallel::ReplicatedParameters> sets;
  size_t max_blocks = 0;
  for (auto& chunk : chunks_) max_blocks = std::max(max_blocks, chunk->blocks().size() + 1);
  for (int c = 0; c < static_cast<int>(chunks_.size()); ++c) {
    const int stage = layout.stage_of(at.stage, c);
    const std::vector<Block*> blocks = chunks_[c]->blocks();
    for (size_t block = 0; block <= blocks.size(); ++block) {
      const std::vector<Parameter*> params = block < blocks.size() ? blocks[block]->parameters()
                                             : chunks_[c]->head() ? chunks_[c]->head()->parameters()
                                                                  : std::vector<Parameter*>{};
      const int order = 2 * static_cast<int>((layout.n_stages() - 1 - stage) * max_blocks +
                                             (blocks.size() - block));
      const std::string name = "stage " + std::to_string(stage) + " block " + std::to_string(block);
      parallel::ReplicatedParameters dense{name + " dense",          order, c, block,
                                           &grid_->dense_replicas(), {}};
      parallel::ReplicatedParameters experts{name + " experts",         order + 1, c, block,
                                             &grid_->expert_replicas(), {}};
      for (Parameter* p : params)
        (p->role == ParameterRole::kRoutedExpert ? experts : dense).params.push_back(p);
      sets.push_back(std::move(dense));
      sets.push_back(std::move(experts));
    }
  }
  sync_ = std::make_unique<parallel::GradientSync>(std::move(sets), config.parallel.zero1);
  optimizer_ = std::make_unique<AdamW>(sync_->update_slices(), config.train);
  executor_->set_comm_timeout(config.comm.timeout_s);
  executor_->set_event_log(options_.events);
  sync_->set_event_log(options_.events);
  executor_->on_chunk_gradients_ready([this](int chunk) { sync_->chunk_ready(chunk); });
  executor_->on_block_gradients_ready(
      [this](int chunk, size_t block) { sync_->block_ready(chunk, block); });
  eval_program_ = parallel::forward_only(layout, config.parallel.microbatches)[at.stage];
  if (world_rank_ == 0)
    log_info("grid: pp ", shape_.pp, " × dp ", shape_.dp, " (ep ", shape_.ep, ", expert dp ",
             shape_.expert_dp(), "), schedule ", choice_name(config.parallel.schedule), ", ",
             config.parallel.microbatches, " micro-batches per data-parallel rank",
             config.parallel.zero1 ? ", ZeRO-1" : "");
}

ParallelEngine::~ParallelEngine() = default;

std::vector<Parameter*> ParallelEngine::parameters() {
  std::vector<Parameter*> out;
  for (auto& chunk : chunks_)
    for (Parameter* p : chunk->parameters()) out.push_back(p);
  return out;
}

TrainingState ParallelEngine::state() {
  TrainingState out;
  out.parameters = parameters();
  for (MoeFfnBlock* moe : moe_blocks_) out.buffers.push_back({moe->bias_name(), moe->bias()});
  out.moments = optimizer_->moments();
  out.saves_moments = sync_->saved_here();
  TANDEM_CHECK(out.saves_moments.size() == out.moments.size(), "one flag per update slice");
  // Every rank holding a layer has the same router bias (updated from the all-reduced load).
  out.saves_buffer.assign(out.buffers.size(), grid_->dense_replicas().rank() == 0);
  out.steps_taken = optimizer_->steps_taken();
  out.learning_rate_change = learning_rate_change();
  return out;
}

nlohmann::json ParallelEngine::grid_description() const {
  return {{"world_size", shape_.pp * shape_.dp},
          {"pp", shape_.pp},
          {"dp", shape_.dp},
          {"ep", shape_.ep},
          {"zero1", config_.parallel.zero1},
          {"schedule", choice_name(config_.parallel.schedule)}};
}

comm::Communicator* ParallelEngine::job_world() {
  return host_world_;
}

int ParallelEngine::pipeline_stage() const {
  return grid_->coords().stage;
}

std::vector<int64_t> ParallelEngine::expert_load_layers() const {
  std::vector<int64_t> layers;
  if (grid_->dense_replicas().rank() != 0) return layers;
  for (MoeFfnBlock* moe : moe_blocks_) layers.push_back(moe->layer());
  return layers;
}

void ParallelEngine::set_steps_taken(int64_t steps) {
  optimizer_->set_steps_taken(steps);
}

// This data-parallel rank's slice of global batch `batch`, in micro-batches.
parallel::MicroBatches ParallelEngine::microbatches(Split split, int64_t batch) const {
  const int64_t m = config_.parallel.microbatches;
  const int64_t per_rank = config_.train.batch_size / shape_.dp;
  const int64_t per_mb = per_rank / m;
  const int64_t tokens = per_mb * config_.model.seq_len;
  parallel::MicroBatches out;
  for (int64_t g = 0; g < m; ++g) {
    Tensor tokens_here = Tensor::empty({tokens}, DType::kI32);
    Tensor targets_here = Tensor::empty({tokens}, DType::kI32);
    loader_.fill(split, batch, grid_->coords().dp_index * per_rank + g * per_mb, per_mb,
                 tokens_here, targets_here);
    const bool on_cpu = device_.type == DeviceType::kCPU;
    out.tokens.push_back(on_cpu ? tokens_here : tokens_here.to(device_));
    out.targets.push_back(on_cpu ? targets_here : targets_here.to(device_));
  }
  return out;
}

StepReport ParallelEngine::train_step(int64_t step) {
  check_step_order(step, optimizer_->steps_taken());
  const uint64_t requests_before = store_requests(), operations_before = recorded_operations();
  const auto& t = config_.train;
  const double global_tokens = static_cast<double>(t.batch_size * config_.model.seq_len);
  for (MoeFfnBlock* moe : moe_blocks_) moe->reset_expert_load();
  for (auto& chunk : chunks_) chunk->fp8_stats() = {};
  DeviceTimer timer(device_);

  const parallel::MicroBatches data = microbatches(Split::kTrain, step);
  last_timeline_ =
      executor_->run(schedule_.ranks[grid_->coords().stage], data, 1.0 / global_tokens);
  double sync_wait_seconds = 0;
  auto sync_start = std::chrono::steady_clock::now();
  const auto sync_waited = [&] {
    const auto now = std::chrono::steady_clock::now();
    sync_wait_seconds += std::chrono::duration<double>(now - sync_start).count();
    sync_start = now;
  };
  sync_->finish();
  sync_waited();
  comm::Communicator& world = *host_world_;
  StepReport report;

  // Router balancing from the load over the whole global batch, as one process would see it:
  // every rank holding a layer routed its own tokens, so the load sums over those replicas.
  if (!moe_blocks_.empty()) {
    const int64_t e = config_.model.n_routed_experts;
    Tensor load = Tensor::empty({static_cast<int64_t>(moe_blocks_.size()) * e}, DType::kI64);
    for (size_t i = 0; i < moe_blocks_.size(); ++i)
      std::copy(moe_blocks_[i]->expert_load().begin(), moe_blocks_[i]->expert_load().end(),
                load.data<int64_t>() + i * e);
    sync_start = std::chrono::steady_clock::now();
    if (device_.type == DeviceType::kCPU) {
      grid_->dense_replicas().all_reduce(load).wait();
    } else {  // the replicas' group is NCCL's, on device memory
      Tensor on_device = load.to(device_);
      grid_->dense_replicas().all_reduce(on_device).wait();
      load = on_device.to(Device::cpu());
    }
    sync_waited();
    const bool reports_load = grid_->dense_replicas().rank() == 0;
    for (size_t i = 0; i < moe_blocks_.size(); ++i) {
      std::vector<int64_t> layer_load(load.data<int64_t>() + i * e,
                                      load.data<int64_t>() + (i + 1) * e);
      moe_blocks_[i]->update_bias(layer_load);
      if (reports_load)
        report.expert_load.push_back({moe_blocks_[i]->layer(), std::move(layer_load)});
    }
  }

  sync_start = std::chrono::steady_clock::now();
  report.loss = comm::all_reduce_value(world, last_timeline_.loss_sum) / global_tokens;
  report.grad_norm = std::sqrt(comm::all_reduce_value(world, sync_->owned_sum_of_squares()));
  sync_waited();
  for (auto& chunk : chunks_) report.fp8.merge(chunk->fp8_stats());
  check_grad_norm(report.grad_norm, step);
  report.learning_rate = learning_rate_at(t, step, learning_rate_change());
  optimizer_->step(report.learning_rate, kernels::clip_coefficient(report.grad_norm, t.grad_clip));
  sync_start = std::chrono::steady_clock::now();
  sync_->gather_parameters();
  sync_waited();
  sync_->zero_grad();

  const parallel::AllToAllStats& a2a = last_timeline_.all_to_all;
  report.bubble_fraction = last_timeline_.bubble_fraction();
  report.dispatch_bytes = a2a[parallel::ExchangeDirection::kDispatch].bytes;
  report.combine_bytes = a2a[parallel::ExchangeDirection::kCombine].bytes;
  report.dispatch_exposed_seconds = a2a[parallel::ExchangeDirection::kDispatch].wait_seconds;
  report.combine_exposed_seconds = a2a[parallel::ExchangeDirection::kCombine].wait_seconds;
  report.pipeline_sent_bytes = last_timeline_.pipeline_sent_bytes;
  report.pipeline_received_bytes = last_timeline_.pipeline_received_bytes;
  report.pipeline_wait_seconds = last_timeline_.seconds - last_timeline_.busy_seconds;
  report.sync_wait_seconds = sync_wait_seconds;
  report.device_seconds = timer.stop_seconds();

  step_store_requests_ += store_requests() - requests_before;
  step_operations_ += recorded_operations() - operations_before;
  if (steps_ > 0) bubble_sum_ += last_timeline_.bubble_fraction();
  step_seconds_ += last_timeline_.seconds;
  all_to_all_.merge(last_timeline_.all_to_all);
  ++steps_;
  return report;
}

uint64_t ParallelEngine::store_requests() const {
  return watchdog_ && watchdog_->store() ? watchdog_->store()->requests() : 0;
}

uint64_t ParallelEngine::recorded_operations() const {
  return watchdog_ ? watchdog_->recorder().entered_total() : 0;
}

double ParallelEngine::evaluate() {
  const auto& t = config_.train;
  double total = 0;
  for (int64_t b = 0; b < t.eval_batches; ++b)
    total += executor_->evaluate(eval_program_, microbatches(Split::kHeldOut, b)).loss_sum;
  return comm::all_reduce_value(*host_world_, total) /
         (static_cast<double>(t.batch_size * config_.model.seq_len) *
          static_cast<double>(t.eval_batches));
}

void ParallelEngine::finish() {
  comm::Communicator& world = *host_world_;
  const double ranks = world.size();
  // The first step (warm-up: allocations, first messages) is left out unless it is the only one.
  const double measured_steps = static_cast<double>(std::max<int64_t>(1, steps_ - 1));
  if (steps_ == 1) bubble_sum_ = last_timeline_.bubble_fraction();
  finished_fields_["world_size"] = world.size();
  finished_fields_["grid"] = {{"pp", shape_.pp},
                              {"dp", shape_.dp},
                              {"ep", shape_.ep},
                              {"expert_dp", shape_.expert_dp()},
                              {"zero1", config_.parallel.zero1}};
  finished_fields_["schedule"] = choice_name(config_.parallel.schedule);
  finished_fields_["microbatches"] = config_.parallel.microbatches;
  finished_fields_["bubble_fraction"] =
      comm::all_reduce_value(world, bubble_sum_ / measured_steps) / ranks;
  finished_fields_["alltoall_seconds"] =
      comm::all_reduce_value(world, all_to_all_.wait_seconds()) / ranks;
  finished_fields_["expert_exchange"] = expert_exchange_;
  finished_fields_["alltoall_bytes"] =
      comm::all_reduce_value(world, static_cast<double>(all_to_all_.bytes()));
  // The watchdog's store traffic: before the flight recorder, each recorded operation was one
  // store request; now a healthy step costs at most the heartbeat's one request per second.
  const double steps = static_cast<double>(std::max<int64_t>(1, steps_));
  finished_fields_["store_requests_per_step_per_rank"] =
      comm::all_reduce_value(world, static_cast<double>(step_store_requests_)) / ranks / steps;
  finished_fields_["communication_ops_per_step_per_rank"] =
      comm::all_reduce_value(world, static_cast<double>(step_operations_)) / ranks / steps;
  finished_fields_["optimizer_state_elements_max_rank"] = comm::all_reduce_value(
      world, static_cast<double>(optimizer_->state_elements()), comm::ReduceOp::kMax);
  if (!options_.trace_path.empty()) write_trace();
}

nlohmann::json ParallelEngine::summary_fields() const {
  return finished_fields_;
}

// Rank 0 gathers every rank's events of the last step into one Chrome trace (one row per rank).
void ParallelEngine::write_trace() {
  comm::Communicator& world = *host_world_;
  const std::vector<std::string> all = comm::gather_strings(
      world, parallel::chrome_trace_events(last_timeline_, world_rank_, 0.0), 0);
  if (world_rank_ != 0) return;
  nlohmann::json events = nlohmann::json::array();
  for (const std::string& rank_events : all)
    for (auto& e : nlohmann::json::parse(rank_events)) events.push_back(e);
  const std::string text =
      nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n";
  try {
    write_output_file("--trace", options_.trace_path, text);
    log_info("trace of the last step written to ", options_.trace_path);
  } catch (const Error& error) {
    // The run goes on to its summary, which records the failure; the trace is kept on stderr.
    log_error(error.what(), "; the trace follows on stderr");
    std::fwrite(text.data(), 1, text.size(), stderr);
    finished_fields_["trace_error"] = error.what();
  }
}

}  // namespace tandem
