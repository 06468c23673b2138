// The executor: pipeline messages implied by the layout, the W queue, F&B interleaving, timing.
#include "parallelism/executor.h"

#include <chrono>
#include <nlohmann/json.hpp>

#include "parallelism/pipeline_channels.h"

namespace tandem::parallel {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

// Everything one step keeps per (chunk, micro-batch), and the messages in flight.
struct PipelineExecutor::Step {
  struct Slot {
    MicroBatchState state;
    Tensor input, grad;  // received (or handed over on this rank) activation / output gradient
    comm::CommHandle input_recv, grad_recv;
  };
  std::vector<std::vector<Slot>> slots;  // [chunk][micro-batch of the chunk's direction]
  std::vector<std::pair<Tensor, comm::CommHandle>> sends;
  std::deque<std::pair<int, int64_t>> deferred_weights;  // (chunk, mb) of each b, oldest first
  std::vector<int64_t> weights_done;                     // per chunk
  Clock::time_point start;
  StepTimeline timeline;
  double wait_s = 0;  // pipeline waits inside the current instruction
};

PipelineExecutor::PipelineExecutor(PipelineLayout layout, int pipeline_rank,
                                   comm::Communicator& pipeline, std::vector<ModelChunk*> chunks,
                                   std::vector<ChunkComm> chunk_comm, bool overlap)
    : layout_(layout),
      rank_(pipeline_rank),
      pipeline_(pipeline),
      chunks_(std::move(chunks)),
      chunk_comm_(std::move(chunk_comm)),
      overlap_(overlap) {
  TANDEM_CHECK(static_cast<int>(chunks_.size()) == layout_.chunks_per_rank() &&
                   chunk_comm_.size() == chunks_.size(),
               "executor: ", chunks_.size(), " chunks for a layout of ", layout_.chunks_per_rank());
  TANDEM_CHECK(pipeline.size() == layout_.pp() && pipeline.rank() == pipeline_rank,
               "executor: pipeline group of ", pipeline.size(), " (rank ", pipeline.rank(),
               ") for pp = ", layout_.pp(), " at rank ", pipeline_rank);
}

StepTimeline PipelineExecutor::run(const std::vector<Instruction>& program,
                                   const MicroBatches& data, double grad_scale) {
  return execute(program, data, Pass::train(grad_scale));
}

StepTimeline PipelineExecutor::evaluate(const std::vector<Instruction>& program,
                                        const MicroBatches& data) {
  return execute(program, data, Pass::evaluate());
}

StepTimeline PipelineExecutor::execute(const std::vector<Instruction>& program,
                                       const MicroBatches& data, Pass pass) {
  const int chunks = layout_.chunks_per_rank();
  const int n_stages = layout_.n_stages();
  const int64_t microbatches = data.count();
  const int64_t tokens = data.tokens.at(0).numel();
  // On the heap so that an error can leave it behind: receives still in flight write into it.
  auto owned_step = std::make_unique<Step>();
  Step& step = *owned_step;
  // Indexed by micro-batch within a direction, which is below the step's total in every program
  // (forward-only programs put all micro-batches in direction 0).
  step.slots.resize(chunks);
  for (auto& list : step.slots) list.resize(microbatches);
  step.weights_done.assign(chunks, 0);
  std::vector<int64_t> backwards(chunks, 0);  // per chunk in this program
  for (const Instruction& ins : program) {
    if (ins.op == Op::kBackward || ins.op == Op::kBackwardInput) ++backwards[ins.chunk];
    if (ins.op == Op::kForwardBackward) ++backwards[ins.chunk_b];
  }
  step.timeline.all_to_all = {};
  std::vector<AllToAllStats> a2a(chunks);
  std::vector<ChunkComm> comm = chunk_comm_;
  for (int c = 0; c < chunks; ++c) comm[c].stats = &a2a[c], comm[c].events = events_;

  // Message tags: (kind, direction, receiving stage, micro-batch) → a unique small integer, below
  // 2^23 (Open MPI's smallest MPI_TAG_UB among its transports).
  const int64_t tags = int64_t{pipeline_message_classes(layout_)} * microbatches;
  TANDEM_USER_CHECK(tags < (int64_t{1} << 23), "pipeline message tags would reach ", tags, " (2 × ",
                    layout_.n_directions(), " directions × ", n_stages, " stages × ", microbatches,
                    " micro-batches), past the 2^23 the transports allow; lower "
                    "parallel.microbatches");
  auto tag = [&](int kind, int direction, int stage, int64_t mb) {
    return pipeline_message_tag(layout_, static_cast<PipelineMessageKind>(kind), direction, stage,
                                mb);
  };
  auto activation = [&](int c) {
    const int64_t d = chunks_[c]->hidden_size();
    return Tensor::empty({tokens, d}, chunks_[c]->dtype(), chunks_[c]->device());
  };

  // Receives are posted a window of instructions ahead of the one that needs them, so a message
  // can land before it is waited for, while the buffers in flight stay bounded.
  auto post_forward_recv = [&](int c, int64_t mb) {
    const int s = layout_.stage_of(rank_, c), d = layout_.direction_of(rank_, c);
    if (s == 0) return;
    const StageSlot from = layout_.slot(d, s - 1);
    if (from.rank == rank_) return;  // handed over on this rank (the turn of the V)
    auto& slot = step.slots[c][mb];
    slot.input = activation(c);
    slot.input_recv = pipeline_.recv(slot.input, from.rank, tag(0, d, s, mb));
    step.timeline.pipeline_received_bytes += static_cast<int64_t>(slot.input.nbytes());
    record_event(events_, StepEventKind::kReceivePosted, tag(0, d, s, mb), from.rank);
  };
  auto post_backward_recv = [&](int c, int64_t mb) {
    const int s = layout_.stage_of(rank_, c), d = layout_.direction_of(rank_, c);
    if (s == n_stages - 1) return;
    const StageSlot from = layout_.slot(d, s + 1);
    if (from.rank == rank_) return;
    auto& slot = step.slots[c][mb];
    slot.grad = activation(c);
    slot.grad_recv = pipeline_.recv(slot.grad, from.rank, tag(1, d, s, mb));
    step.timeline.pipeline_received_bytes += static_cast<int64_t>(slot.grad.nbytes());
    record_event(events_, StepEventKind::kReceivePosted, tag(1, d, s, mb), from.rank);
  };
  auto post_receives = [&](const Instruction& ins) {
    switch (ins.op) {
      case Op::kForward:
        post_forward_recv(ins.chunk, ins.mb);
        break;
      case Op::kBackward:
      case Op::kBackwardInput:
        post_backward_recv(ins.chunk, ins.mb);
        break;
      case Op::kForwardBackward:
        post_forward_recv(ins.chunk, ins.mb);
        post_backward_recv(ins.chunk_b, ins.mb_b);
        break;
      case Op::kWeight:
        break;
    }
  };
  const size_t window = static_cast<size_t>(2 * layout_.pp() + 2);
  size_t posted = 0;
  auto post_ahead = [&](size_t current) {
    for (; posted < program.size() && posted <= current + window; ++posted)
      post_receives(program[posted]);
  };
  // Sends that have completed are dropped as the step goes, so their buffers can be reused.
  auto release_sent = [&] {
    std::erase_if(step.sends, [](auto& send) { return send.second.test(); });
  };
  step.start = Clock::now();

  auto wait_message = [&](comm::CommHandle& handle) {
    const auto begin = Clock::now();
    handle.wait();
    step.wait_s += seconds_between(begin, Clock::now());
  };
  auto send_or_hand_over = [&](Tensor value, int direction, int to_stage, int kind, int64_t mb) {
    const StageSlot to = layout_.slot(direction, to_stage);
    if (to.rank == rank_) {
      auto& slot = step.slots[to.chunk][mb];
      (kind == 0 ? slot.input : slot.grad) = value;
      return;
    }
    record_event(events_, StepEventKind::kSendStarted, tag(kind, direction, to_stage, mb), to.rank);
    comm::CommHandle handle = pipeline_.send(value, to.rank, tag(kind, direction, to_stage, mb));
    step.timeline.pipeline_sent_bytes += static_cast<int64_t>(value.nbytes());
    step.sends.emplace_back(std::move(value), std::move(handle));
  };

  // Forward of (c, mb): its task, and what to do with the output once it has run.
  auto start_forward = [&](int c, int64_t mb, Tensor* output) {
    const int s = layout_.stage_of(rank_, c), d = layout_.direction_of(rank_, c);
    auto& slot = step.slots[c][mb];
    const int64_t global = layout_.global_microbatch(d, mb, microbatches);
    Tensor input = s == 0 ? data.tokens.at(global) : slot.input;
    if (s > 0) {
      wait_message(slot.input_recv);
      input = slot.input;
      TANDEM_CHECK(input.defined(), "executor: no input for F", c, ".", mb, " on rank ", rank_);
    }
    const Tensor* targets = s == n_stages - 1 ? &data.targets.at(global) : nullptr;
    return forward_task(*chunks_[c], input, slot.state, targets, pass, output, comm[c]);
  };
  auto finish_forward = [&](int c, int64_t mb, const Tensor& output) {
    const int s = layout_.stage_of(rank_, c), d = layout_.direction_of(rank_, c);
    auto& slot = step.slots[c][mb];
    step.timeline.loss_sum += slot.state.loss_sum;
    slot.input = Tensor();
    if (s < n_stages - 1) send_or_hand_over(output, d, s + 1, 0, mb);
  };
  // The block-level report for the W work about to run on chunk c, if it is the chunk's last.
  auto last_weights_report = [&](int c) -> std::function<void(size_t)> {
    if (!block_ready_ || step.weights_done[c] + 1 != backwards[c]) return {};
    return [this, c](size_t block) { block_ready_(c, block); };
  };
  auto start_backward = [&](int c, int64_t mb, Tensor* dx, bool full) {
    const int s = layout_.stage_of(rank_, c);
    auto& slot = step.slots[c][mb];
    if (s < n_stages - 1) {
      wait_message(slot.grad_recv);
      TANDEM_CHECK(slot.grad.defined(), "executor: no gradient for B", c, ".", mb, " on rank ",
                   rank_);
    }
    const bool weights_in_gaps = full && overlap_;
    return backward_task(*chunks_[c], slot.grad, slot.state, dx, comm[c], weights_in_gaps,
                         weights_in_gaps ? last_weights_report(c) : nullptr);
  };
  auto weights = [&](int c, int64_t mb) {
    record_event(events_, StepEventKind::kWeightGradientBegin);
    chunks_[c]->backward_weight(step.slots[c][mb].state, last_weights_report(c));
    record_event(events_, StepEventKind::kWeightGradientEnd);
    if (++step.weights_done[c] == backwards[c] && gradients_ready_) gradients_ready_(c);
  };
  auto finish_backward = [&](int c, int64_t mb, const Tensor& dx, bool with_weights) {
    const int s = layout_.stage_of(rank_, c), d = layout_.direction_of(rank_, c);
    step.slots[c][mb].grad = Tensor();
    if (s > 0) send_or_hand_over(dx, d, s - 1, 1, mb);
    if (with_weights) {
      weights(c, mb);
    } else {
      step.deferred_weights.emplace_back(c, mb);
    }
  };

  try {
    for (size_t index = 0; index < program.size(); ++index) {
      const Instruction& ins = program[index];
      post_ahead(index);
      release_sent();
      const auto begin = Clock::now();
      record_event(events_, StepEventKind::kInstructionBegin, static_cast<int64_t>(index));
      step.wait_s = 0;
      Tensor out, dx;
      switch (ins.op) {
        case Op::kForward: {
          PhasedTask task = start_forward(ins.chunk, ins.mb, &out);
          task.run_to_end();
          finish_forward(ins.chunk, ins.mb, out);
          break;
        }
        case Op::kBackward:
        case Op::kBackwardInput: {
          TANDEM_CHECK(pass.training(), "executor: backward in an evaluation program");
          PhasedTask task = start_backward(ins.chunk, ins.mb, &dx, ins.op == Op::kBackward);
          task.run_to_end();
          finish_backward(ins.chunk, ins.mb, dx, ins.op == Op::kBackward);
          break;
        }
        case Op::kWeight: {
          TANDEM_CHECK(!step.deferred_weights.empty(), "executor: W with no deferred b on rank ",
                       rank_);
          const auto [c, mb] = step.deferred_weights.front();
          TANDEM_CHECK(c == ins.chunk && mb == ins.mb, "executor: W for ", ins.chunk, ".", ins.mb,
                       " but the oldest deferred b is ", c, ".", mb);
          step.deferred_weights.pop_front();
          weights(c, mb);
          break;
        }
        case Op::kForwardBackward: {
          PhasedTask forward = start_forward(ins.chunk, ins.mb, &out);
          PhasedTask backward = start_backward(ins.chunk_b, ins.mb_b, &dx, true);
          if (overlap_) {
            run_interleaved(forward, backward, comm_timeout_s_);
          } else {
            forward.run_to_end();
            backward.run_to_end();
          }
          finish_forward(ins.chunk, ins.mb, out);
          finish_backward(ins.chunk_b, ins.mb_b, dx, true);
          break;
        }
      }
      const auto end = Clock::now();
      record_event(events_, StepEventKind::kInstructionEnd, static_cast<int64_t>(index));
      InstructionTiming timing{ins.op, ins.to_string(), seconds_between(step.start, begin),
                               seconds_between(step.start, end), step.wait_s};
      step.timeline.busy_seconds += timing.end_s - timing.start_s - timing.wait_s;
      step.timeline.instructions.push_back(std::move(timing));
    }
  } catch (...) {
    // Pending receives and sends still point into the step's buffers: keep them (deliberately
    // leaked) and let the error through at once instead of waiting on peers that may be gone.
    static_cast<void>(owned_step.release());
    throw;
  }
  TANDEM_CHECK(step.deferred_weights.empty(), "executor: ", step.deferred_weights.size(),
               " weight gradients never ran on rank ", rank_, " (the program lacks W)");
  for (auto& [tensor, handle] : step.sends) handle.wait();
  step.timeline.seconds = seconds_between(step.start, Clock::now());
  // Each exchange's time blocked on it was booked to it by the task runners.
  for (const AllToAllStats& s : a2a) step.timeline.all_to_all.merge(s);
  return std::move(step.timeline);
}

std::string chrome_trace_events(const StepTimeline& timeline, int rank, double offset_s) {
  nlohmann::json events = nlohmann::json::array();
  for (const InstructionTiming& t : timeline.instructions) {
    const char* category = op_category(t.op);
    events.push_back({{"name", t.name},
                      {"cat", category},
                      {"ph", "X"},
                      {"pid", rank},
                      {"tid", 0},
                      {"ts", (offset_s + t.start_s) * 1e6},
                      {"dur", (t.end_s - t.start_s) * 1e6},
                      {"args", {{"pipeline_wait_ms", t.wait_s * 1e3}}}});
  }
  events.push_back({{"name", "process_name"},
                    {"ph", "M"},
                    {"pid", rank},
                    {"args", {{"name", "rank " + std::to_string(rank)}}}});
  return events.dump();
}

}  // namespace tandem::parallel
