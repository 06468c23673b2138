// Discrete-event simulation of a pipeline schedule: the start and end of every instruction on
// every rank, from the costs of F, B, W, F&B and pipeline messages.
#include "parallelism/schedule_simulator.h"

#include <algorithm>

#include "runtime/core/errors.h"

namespace tandem::parallel {

namespace {

constexpr double kUnknown = -1;  // a forward or backward that has not ended yet

double cost_of(const Instruction& in, const ScheduleCosts& costs) {
  switch (in.op) {
    case Op::kForward:
      return costs.f;
    case Op::kBackward:
      return costs.b;
    case Op::kBackwardInput:
      return costs.b - costs.w;
    case Op::kWeight:
      return costs.w;
    case Op::kForwardBackward:
      return costs.pair_cost();
  }
  return 0;
}

}  // namespace

namespace {
SimulationResult simulate_durations(const Schedule& schedule, const ScheduleCosts& costs,
                                    const std::vector<std::vector<double>>* durations);
}  // namespace

SimulationResult simulate(const Schedule& schedule, const ScheduleCosts& costs) {
  return simulate_durations(schedule, costs, nullptr);
}

SimulationResult simulate_measured(const Schedule& schedule,
                                   const std::vector<std::vector<double>>& durations, double comm) {
  TANDEM_USER_CHECK(durations.size() == schedule.ranks.size(), "durations for ", durations.size(),
                    " ranks, the schedule has ", schedule.ranks.size());
  for (size_t r = 0; r < durations.size(); ++r)
    TANDEM_USER_CHECK(durations[r].size() == schedule.ranks[r].size(), "rank ", r, ": ",
                      durations[r].size(), " durations for ", schedule.ranks[r].size(),
                      " instructions");
  ScheduleCosts costs;
  costs.comm = comm;
  return simulate_durations(schedule, costs, &durations);
}

namespace {
// Every instruction costs what `costs` says, or, given durations, durations[rank][index].
SimulationResult simulate_durations(const Schedule& schedule, const ScheduleCosts& costs,
                                    const std::vector<std::vector<double>>* durations) {
  TANDEM_USER_CHECK(
      costs.f >= 0 && costs.b >= 0 && costs.w >= 0 && costs.fb >= 0 && costs.comm >= 0,
      "schedule costs must not be negative");
  TANDEM_USER_CHECK(costs.w <= costs.b, "the weight-gradient cost w = ", costs.w,
                    " is part of the full backward b = ", costs.b, ", so it cannot exceed it");
  // Also proves that the event loop below finishes.
  check_schedule(schedule);

  const PipelineLayout layout = schedule.layout();
  const int pp = schedule.pp;
  const int n_stages = layout.n_stages();
  const int64_t per_direction = schedule.microbatches / layout.n_directions();
  const size_t cells = static_cast<size_t>(layout.n_directions()) * n_stages * per_direction;
  auto cell = [&](int direction, int stage, int64_t mb) {
    return (static_cast<size_t>(direction) * n_stages + stage) * per_direction + mb;
  };
  // When each (direction, stage, mb) forward / input gradient ended, and on which rank.
  std::vector<double> forward_end(cells, kUnknown), backward_end(cells, kUnknown);

  // When the input of a forward (or a backward's output gradient) is available on `rank`, or
  // kUnknown when its producer has not run yet.
  auto arrival = [&](const std::vector<double>& ends, int rank, int direction, int stage,
                     int64_t mb) {
    const double end = ends[cell(direction, stage, mb)];
    if (end == kUnknown) return kUnknown;
    return layout.slot(direction, stage).rank == rank ? end : end + costs.comm;
  };
  auto forward_ready = [&](int rank, int chunk, int64_t mb) {
    const int d = layout.direction_of(rank, chunk), s = layout.stage_of(rank, chunk);
    return s == 0 ? 0.0 : arrival(forward_end, rank, d, s - 1, mb);
  };
  auto backward_ready = [&](int rank, int chunk, int64_t mb) {
    const int d = layout.direction_of(rank, chunk), s = layout.stage_of(rank, chunk);
    // Its own forward ran earlier on this rank (check_schedule), so only the gradient matters.
    return s == n_stages - 1 ? 0.0 : arrival(backward_end, rank, d, s + 1, mb);
  };
  // The time `in` may start by its messages, or kUnknown while one has not been sent.
  auto ready_time = [&](int rank, const Instruction& in) {
    switch (in.op) {
      case Op::kForward:
        return forward_ready(rank, in.chunk, in.mb);
      case Op::kBackward:
      case Op::kBackwardInput:
        return backward_ready(rank, in.chunk, in.mb);
      case Op::kWeight:
        return 0.0;
      case Op::kForwardBackward: {
        const double f = forward_ready(rank, in.chunk, in.mb);
        const double b = backward_ready(rank, in.chunk_b, in.mb_b);
        return f == kUnknown || b == kUnknown ? kUnknown : std::max(f, b);
      }
    }
    return 0.0;
  };
  auto record_end = [&](int rank, const Instruction& in, double end) {
    auto mark = [&](std::vector<double>& ends, int chunk, int64_t mb) {
      ends[cell(layout.direction_of(rank, chunk), layout.stage_of(rank, chunk), mb)] = end;
    };
    if (in.op == Op::kForward || in.op == Op::kForwardBackward) mark(forward_end, in.chunk, in.mb);
    if (in.op == Op::kBackward || in.op == Op::kBackwardInput) mark(backward_end, in.chunk, in.mb);
    if (in.op == Op::kForwardBackward) mark(backward_end, in.chunk_b, in.mb_b);
  };

  SimulationResult result;
  result.busy.assign(pp, 0);
  result.finish.assign(pp, 0);
  result.peak_activations.assign(pp, 0);
  std::vector<std::vector<TimedInstruction>> timed(pp);
  std::vector<size_t> next(pp, 0);
  std::vector<double> free_at(pp, 0);
  // Times only depend on each rank's order and on the producers' end times, so the ranks can be
  // advanced in any interleaving; check_schedule guarantees this loop completes.
  for (bool progressed = true; progressed;) {
    progressed = false;
    for (int r = 0; r < pp; ++r) {
      const auto& list = schedule.ranks[r];
      while (next[r] < list.size()) {
        const Instruction& in = list[next[r]];
        const double ready = ready_time(r, in);
        if (ready == kUnknown) break;
        const double start = std::max(free_at[r], ready);
        const double end = start + (durations ? (*durations)[r][next[r]] : cost_of(in, costs));
        record_end(r, in, end);
        timed[r].push_back({r, next[r], start, end});
        free_at[r] = end;
        result.busy[r] += end - start;
        ++next[r];
        progressed = true;
      }
    }
  }
  for (int r = 0; r < pp; ++r) {
    TANDEM_CHECK(next[r] == schedule.ranks[r].size(), "simulation stalled on rank ", r);
    result.finish[r] = free_at[r];
    result.makespan = std::max(result.makespan, free_at[r]);
    result.timeline.insert(result.timeline.end(), timed[r].begin(), timed[r].end());
    // The activation count only changes at this rank's own instructions, so its running maximum
    // over the list is its peak over time.
    int64_t live = 0, peak = 0;
    for (const Instruction& in : schedule.ranks[r]) {
      if (in.op == Op::kForward || in.op == Op::kForwardBackward) peak = std::max(peak, ++live);
      if (in.op == Op::kBackward || in.op == Op::kBackwardInput || in.op == Op::kForwardBackward) {
        --live;
      }
    }
    result.peak_activations[r] = peak;
    result.max_peak_activations = std::max(result.max_peak_activations, peak);
  }
  result.bubble = result.makespan - *std::min_element(result.busy.begin(), result.busy.end());
  result.bubble_fraction = result.makespan > 0 ? result.bubble / result.makespan : 0;
  return result;
}
}  // namespace

double published_bubble(ScheduleKind kind, int pp, const ScheduleCosts& costs) {
  switch (kind) {
    case ScheduleKind::k1F1B:
      return (pp - 1) * (costs.f + costs.b);
    case ScheduleKind::kZBH1:
      return (pp - 1) * (costs.f + costs.b - 2 * costs.w);
    case ScheduleKind::kDualPipe:
      return (pp / 2 - 1) * (costs.pair_cost() + costs.b - 3 * costs.w);
    case ScheduleKind::kDualPipeV:
      return (pp - 1) * (costs.pair_cost() + costs.b - 3 * costs.w);
  }
  return 0;
}

const char* published_bubble_formula(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::k1F1B:
      return "(PP-1)(F+B)";
    case ScheduleKind::kZBH1:
      return "(PP-1)(F+B-2W)";
    case ScheduleKind::kDualPipe:
      return "(PP/2-1)(F&B+B-3W)";
    case ScheduleKind::kDualPipeV:
      return "(n-1)(F&B+B-3W), n = ranks (DualPipe with PP = 2n)";
  }
  return "?";
}

}  // namespace tandem::parallel
