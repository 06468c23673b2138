// Pipeline schedules as data: for every rank an ordered list of instructions (forward, backward,
// input-only backward, deferred weight gradient, overlapped forward+backward pair). The pipeline
// sends and receives are implied by where each chunk's stage sits (PipelineLayout): a forward
// receives its input from the previous stage of its direction and sends its output to the next
// one; a backward does the reverse. Generators: 1F1B, ZB-H1, DualPipe, DualPipeV.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/choices.h"

namespace tandem::parallel {

// The kinds and their names ("1f1b", "zb-h1", "dualpipe", "dualpipev") live with the other
// configuration choices: parse_choice<ScheduleKind>, choice_name.
using tandem::ScheduleKind;

enum class Op : uint8_t {
  kForward,          // F: forward of (chunk, mb)
  kBackward,         // B: input and weight gradients of (chunk, mb)
  kBackwardInput,    // b: input gradient only; the weight gradient is queued
  kWeight,           // W: the oldest queued weight gradient; (chunk, mb) says which one it is
  kForwardBackward,  // F&B: forward of (chunk, mb) overlapped with full backward of (chunk_b, mb_b)
};

struct Instruction {
  Op op = Op::kForward;
  int chunk = 0;    // local chunk index on this rank (0 or 1)
  int64_t mb = 0;   // micro-batch index within this chunk's direction
  int chunk_b = 0;  // kForwardBackward: the backward half
  int64_t mb_b = 0;
  // "F0.3", "B1.2", "b0.1", "W", "F0.3&B1.1": the notation of the DualPipe README.
  std::string to_string() const;
  bool operator==(const Instruction&) const = default;
};

// The trace category of an instruction kind: "F", "B" (a full or input-only backward), "W", "F&B".
const char* op_category(Op op);

// A rank's position in the pipeline: which model stage each of its chunks runs and which
// direction micro-batches flow through it. 1F1B and ZB-H1: one chunk, stage = rank, one
// direction. DualPipe: stages r and pp−1−r; chunk 0 is the direction whose first stage is at this
// rank's nearer end (ranks in the first half: downwards, 0 → pp−1; second half: upwards), so
// ranks r and pp−1−r run the same instruction list. DualPipeV: 2·pp stages in a V, one direction;
// chunk 0 is stage r (on the way down), chunk 1 is stage 2·pp−1−r (on the way back).
struct StageSlot {
  int rank = 0;
  int chunk = 0;
  bool operator==(const StageSlot&) const = default;
};

class PipelineLayout {
 public:
  PipelineLayout(ScheduleKind kind, int pp);
  ScheduleKind kind() const { return kind_; }
  int pp() const { return pp_; }
  int chunks_per_rank() const;  // 1 or 2
  int n_stages() const;         // model stages: pp, or 2·pp for DualPipeV
  int n_directions() const;     // 2 for DualPipe, else 1
  int stage_of(int rank, int chunk) const;
  int direction_of(int rank, int chunk) const;
  // Who runs stage `stage` for micro-batches flowing in `direction`.
  StageSlot slot(int direction, int stage) const;
  // Micro-batches are numbered per direction in instructions; globally, direction d's micro-batch
  // m is d·(microbatches / n_directions) + m.
  int64_t global_microbatch(int direction, int64_t mb, int64_t microbatches) const;

 private:
  ScheduleKind kind_;
  int pp_;
};

struct Schedule {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int pp = 1;
  int64_t microbatches = 1;                     // in total, over both directions for DualPipe
  std::vector<std::vector<Instruction>> ranks;  // one instruction list per pipeline rank
  PipelineLayout layout() const { return PipelineLayout(kind, pp); }
};

// Refuses impossible (pp, microbatches) for a kind with a message naming the numbers: DualPipe
// needs even pp and an even number of micro-batches ≥ 2·pp; DualPipeV needs ≥ 2·pp; 1F1B and
// ZB-H1 need ≥ 1.
void validate_schedule_request(ScheduleKind kind, int pp, int64_t microbatches);
Schedule make_schedule(ScheduleKind kind, int pp, int64_t microbatches);

// Forward-only order (evaluation): every rank runs F of each micro-batch through its stages of
// direction 0 in stage order. Deadlock-free on any layout.
std::vector<std::vector<Instruction>> forward_only(const PipelineLayout& layout,
                                                   int64_t microbatches);

// check_schedule for a forward_only order: every direction-0 chunk runs F of each of the
// `microbatches` once, nothing else, and the ranks do not deadlock.
void check_forward_only(const PipelineLayout& layout,
                        const std::vector<std::vector<Instruction>>& ranks, int64_t microbatches);

// Throws with a message naming the rank and instruction when a schedule is not runnable: each
// (chunk, mb) must run F, then B (or b then W) exactly once, W in queue order, and the cross-rank
// dependencies must complete without deadlock when every rank runs its list in order.
void check_schedule(const Schedule& schedule);

// "rank R: F0.0 F0.1 ..." one line per rank.
std::string format_schedule(const Schedule& schedule);

}  // namespace tandem::parallel
