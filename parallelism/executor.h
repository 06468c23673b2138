// Runs one rank's instruction list (parallelism/schedule.h) on its model chunks for one step.
// Pipeline receives are posted a window of instructions ahead and waited only when an instruction
// needs them; sends are started as soon as a result exists and released once complete. An F&B pair
// runs its forward and backward tasks interleaved at the expert all-to-alls (or one after the other
// when overlap is off). Every instruction's start and end and every wait for a pipeline message is
// recorded, for the bubble fraction and the trace.
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "parallelism/chunk_tasks.h"
#include "parallelism/schedule.h"
#include "runtime/model/model_chunk.h"

namespace tandem::parallel {

// The step's micro-batches, by global index (PipelineLayout::global_microbatch): tokens and
// targets, int32 [tokens per micro-batch] each. Only the first and last stages read them.
struct MicroBatches {
  std::vector<Tensor> tokens, targets;
  int64_t count() const { return static_cast<int64_t>(tokens.size()); }
};

struct InstructionTiming {
  Op op = Op::kForward;
  std::string name;    // "F0.3", "W", "F0.3&B1.1"
  double start_s = 0;  // from the start of the step
  double end_s = 0;
  double wait_s = 0;  // of which waiting for pipeline messages
};

struct StepTimeline {
  double seconds = 0;       // the whole step on this rank, final sends included
  double busy_seconds = 0;  // inside instructions, minus their waits for pipeline messages
  std::vector<InstructionTiming> instructions;
  AllToAllStats all_to_all;
  // Pipeline messages of the step (a hand-over between two chunks of this rank is not one).
  int64_t pipeline_sent_bytes = 0, pipeline_received_bytes = 0;
  double loss_sum = 0;  // Σ token losses on this rank's head chunk(s)
  double bubble_fraction() const { return seconds > 0 ? 1.0 - busy_seconds / seconds : 0.0; }
};

class PipelineExecutor {
 public:
  // chunks[c] is this rank's local chunk c; comm[c] its expert group (dispatcher may be null).
  PipelineExecutor(PipelineLayout layout, int pipeline_rank, comm::Communicator& pipeline,
                   std::vector<ModelChunk*> chunks, std::vector<ChunkComm> chunk_comm,
                   bool overlap);

  // Called once per chunk when its last weight gradient of the step has run, so its gradient
  // reduction can start while the rest of the backward runs.
  void on_chunk_gradients_ready(std::function<void(int chunk)> callback) {
    gradients_ready_ = std::move(callback);
  }
  // Finer: once per block of each chunk (blocks().size() is the head), as its last weight gradient
  // of the step completes, last block first.
  void on_block_gradients_ready(std::function<void(int chunk, size_t block)> callback) {
    block_ready_ = std::move(callback);
  }

  // How long an F&B pair may wait for its communication before the watchdog is asked to report.
  void set_comm_timeout(double seconds) { comm_timeout_s_ = seconds; }
  // Records every instruction, pipeline receive and send, expert all-to-all and weight-gradient
  // run into `log` (not cleared here); null stops recording.
  void set_event_log(StepEventLog* log) { events_ = log; }

  // Runs a training step's program; grad_scale is the loss scale (1 / tokens in the global batch).
  StepTimeline run(const std::vector<Instruction>& program, const MicroBatches& data,
                   double grad_scale);
  // Runs a forward-only program (parallelism/schedule.h forward_only) for evaluation.
  StepTimeline evaluate(const std::vector<Instruction>& program, const MicroBatches& data);

 private:
  struct Step;
  StepTimeline execute(const std::vector<Instruction>& program, const MicroBatches& data,
                       Pass pass);

  PipelineLayout layout_;
  int rank_;
  comm::Communicator& pipeline_;
  std::vector<ModelChunk*> chunks_;
  std::vector<ChunkComm> chunk_comm_;
  bool overlap_;
  double comm_timeout_s_ = 300;
  StepEventLog* events_ = nullptr;
  std::function<void(int)> gradients_ready_;
  std::function<void(int, size_t)> block_ready_;
};

// Chrome trace events ("X" events, microseconds) of one rank's step, for chrome://tracing and
// Perfetto: one row per rank (pid = rank).
std::string chrome_trace_events(const StepTimeline& timeline, int rank, double offset_s);

}  // namespace tandem::parallel
