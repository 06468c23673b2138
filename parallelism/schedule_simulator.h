// A discrete-event simulator for pipeline schedules: runs every rank's instruction list with given
// costs for F, B, W, the overlapped F&B pair and each pipeline message, and reports the makespan,
// the bubble and the peak activation count per rank.
#pragma once

#include <cstdint>
#include <vector>

#include "parallelism/schedule.h"

namespace tandem::parallel {

// Costs in any time unit. A full backward B = input gradient (b) + weight gradient (W), so the
// split b costs b − w.
struct ScheduleCosts {
  double f = 1;     // forward of one chunk
  double b = 2;     // full backward (input and weight gradients) of one chunk
  double w = 1;     // the weight-gradient part of b
  double fb = 0;    // an overlapped F&B pair; 0 means f + b (no gain from overlapping)
  double comm = 0;  // each pipeline message between two different ranks
  double pair_cost() const { return fb > 0 ? fb : f + b; }
};

struct TimedInstruction {
  int rank = 0;
  size_t index = 0;  // position in the rank's list
  double start = 0;
  double end = 0;
};

// The bubble is the idle time of the least busy rank: bubble = makespan − min over ranks of the
// busy time, where the makespan runs from t = 0 to the end of the last instruction on any rank.
// One definition for every schedule. In 1F1B and ZB-H1 all ranks are equally busy, so it is any
// rank's idle time; in DualPipe(V) ranks overlap different numbers of F&B pairs, and the published
// figure is the idle time of the ranks that overlap most (rank 0's idle time is smaller for
// pp ≥ 6). With comm = 0 it equals the formulas published with DualPipe (README, DeepSeek-V3
// Table 2; B is the full backward):
//   1F1B      (PP−1)(F+B)                  ZB-H1  (PP−1)(F+B−2W)
//   DualPipe  (PP/2−1)(F&B+B−3W)           DualPipeV on n ranks: DualPipe with PP = 2n
// under the conditions tests/unit/test_schedule.cc states (ZB-H1: M ≥ PP, W ≤ F, 2W ≤ B;
// DualPipe(V): F = B − W and F&B ≥ B); outside them the simulated value is the real one.
struct SimulationResult {
  double makespan = 0;
  std::vector<double> busy;               // per rank: the sum of its instructions' costs
  std::vector<double> finish;             // per rank: when its last instruction ends
  double bubble = 0;                      // makespan − min(busy), see above
  double bubble_fraction = 0;             // bubble / makespan
  std::vector<int64_t> peak_activations;  // per rank, in chunk activations
  int64_t max_peak_activations = 0;
  std::vector<TimedInstruction> timeline;  // every instruction, rank by rank in list order
};

// Checks the schedule (check_schedule) and simulates it. Each rank runs its list in order; an
// instruction starts when the rank is free and every message it needs has arrived (sender's end
// + comm; a hand-off between two chunks of the same rank, like DualPipeV's turn, costs nothing).
// Activations: +1 when a chunk's forward runs, −1 when its B or b runs; in an F&B pair the forward
// counts first, so the transient peak is included.
SimulationResult simulate(const Schedule& schedule, const ScheduleCosts& costs);

// The same with every instruction's own cost: durations[rank][i] for the i-th instruction of that
// rank (e.g. measured by the executor), and `comm` per pipeline message. What the schedule's
// order alone predicts from what each instruction really took.
SimulationResult simulate_measured(const Schedule& schedule,
                                   const std::vector<std::vector<double>>& durations, double comm);
// The published bubble formula for `kind` (see SimulationResult), for comparison.
double published_bubble(ScheduleKind kind, int pp, const ScheduleCosts& costs);
// That formula as text, e.g. "(PP-1)(F+B)".
const char* published_bubble_formula(ScheduleKind kind);

}  // namespace tandem::parallel
