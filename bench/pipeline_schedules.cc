// Pipeline schedules on real ranks: for each schedule, the step time and the measured bubble
// (makespan minus the least busy rank's compute, as the simulator defines it) against the
// simulator's prediction from the F, B, W and F&B costs measured in the same run; then the
// expert all-to-all time left exposed with the F&B overlap off and on.
//   mpirun -np N pipeline_schedules CONFIG.toml --schedules 1f1b,zb-h1,dualpipe
//       [--steps 6] [--overlap-compare] [--set section.key=value]...
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "comm/world.h"
#include "parallelism/schedule_simulator.h"
#include "runtime/core/runtime_context.h"
#include "runtime/train/parallel_engine.h"

namespace {

using namespace tandem;

struct Measured {
  double step_seconds = 0;        // median over steps of the slowest rank
  double bubble_fraction = 0;     // median over steps: (makespan − least busy rank) / makespan
  bool simulated = false;         // the replay needs one pipeline (world = pp)
  double simulated_fraction = 0;  // median over steps: the simulator's, from the same durations
  parallel::ScheduleCosts costs;  // mean measured instruction times, in seconds
  double alltoall_exposed = 0;    // mean over ranks and steps, seconds per step
  double alltoall_bytes = 0;      // per step, all ranks
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Every rank's instruction durations (compute only, pipeline waits excluded) on rank 0.
std::vector<std::vector<double>> gather_durations(comm::Communicator& c,
                                                  const parallel::StepTimeline& t) {
  std::vector<double> mine;
  for (const auto& ins : t.instructions) mine.push_back(ins.end_s - ins.start_s - ins.wait_s);
  const std::string bytes(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(double));
  std::vector<std::vector<double>> all;
  for (const std::string& theirs : comm::gather_strings(c, bytes, 0)) {
    all.emplace_back(theirs.size() / sizeof(double));
    std::memcpy(all.back().data(), theirs.data(), theirs.size());
  }
  return all;
}

Measured measure(const Config& config, comm::World& world, int steps) {
  comm::Communicator& c = *world.comm;
  ParallelEngine engine(config, world);
  const bool one_pipeline = c.size() == engine.schedule().pp;
  std::vector<double> step_times, bubbles, simulated;
  std::map<std::string, std::pair<double, double>> by_kind;  // kind → (Σ seconds, count)
  double exposed = 0, bytes = 0;
  for (int s = 0; s <= steps; ++s) {
    engine.train_step(s);
    if (s == 0) continue;  // warm-up
    const parallel::StepTimeline& t = engine.last_timeline();
    const double makespan = comm::all_reduce_value(c, t.seconds, comm::ReduceOp::kMax);
    const double least_busy = comm::all_reduce_value(c, t.busy_seconds, comm::ReduceOp::kMin);
    step_times.push_back(makespan);
    bubbles.push_back((makespan - least_busy) / makespan);
    if (one_pipeline) {
      const auto durations = gather_durations(c, t);
      if (c.rank() == 0)
        simulated.push_back(
            parallel::simulate_measured(engine.schedule(), durations, 0.0).bubble_fraction);
    }
    exposed += t.all_to_all.wait_seconds();
    bytes += static_cast<double>(t.all_to_all.bytes());
    for (const auto& ins : t.instructions) {
      const std::string kind = ins.name.find('&') != std::string::npos ? "F&B"
                               : ins.name[0] == 'F'                    ? "F"
                               : ins.name[0] == 'W'                    ? "W"
                               : ins.name[0] == 'b'                    ? "b"
                                                                       : "B";
      by_kind[kind].first += ins.end_s - ins.start_s - ins.wait_s;
      by_kind[kind].second += 1;
    }
  }
  auto mean = [&](const char* kind) {
    const auto it = by_kind.find(kind);
    const double sum =
        comm::all_reduce_value(c, it == by_kind.end() ? 0 : it->second.first, comm::ReduceOp::kSum);
    const double n = comm::all_reduce_value(c, it == by_kind.end() ? 0 : it->second.second,
                                            comm::ReduceOp::kSum);
    return n > 0 ? sum / n : 0.0;
  };
  Measured m;
  m.step_seconds = median(step_times);
  m.bubble_fraction = median(bubbles);
  m.simulated = !simulated.empty();
  m.simulated_fraction = m.simulated ? median(simulated) : 0.0;
  const double f = mean("F"), full_b = mean("B"), b = mean("b"), w = mean("W"), fb = mean("F&B");
  m.costs.f = f;
  m.costs.w = w;
  m.costs.b = full_b > 0 ? full_b : b + w;
  m.costs.fb = fb;
  m.costs.comm = 0;
  m.alltoall_exposed = comm::all_reduce_value(c, exposed, comm::ReduceOp::kSum) / c.size() / steps;
  m.alltoall_bytes = comm::all_reduce_value(c, bytes, comm::ReduceOp::kSum) / steps;
  return m;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    TANDEM_USER_CHECK(argc >= 2,
                      "usage: pipeline_schedules CONFIG.toml --schedules a,b [--steps N]"
                      " [--overlap-compare] [--set k=v]...");
    Config config = load_config_file(argv[1]);
    std::vector<std::string> schedules;  // default: parallel.schedule, after the --set overrides
    int steps = 6;
    bool overlap_compare = false;
    for (int i = 2; i < argc; ++i) {
      const std::string arg = argv[i];
      TANDEM_USER_CHECK(arg == "--overlap-compare" || i + 1 < argc, arg, " needs a value");
      if (arg == "--schedules")
        schedules = split_list(argv[++i]);
      else if (arg == "--steps")
        steps = std::stoi(argv[++i]);
      else if (arg == "--set")
        apply_override(config, argv[++i]);
      else if (arg == "--overlap-compare")
        overlap_compare = true;
      else
        TANDEM_USER_CHECK(false, "unknown option ", arg);
    }
    if (schedules.empty()) schedules = {std::string(choice_name(config.parallel.schedule))};
    config.train.steps = steps + 1;
    comm::World world = comm::join_world({CommBackend::kAuto, 300000, "", true});
    runtime().rank = world.comm->rank();
    set_thread_count(1);
    const bool root = world.comm->rank() == 0;
    for (const std::string& name : schedules) {
      config.parallel.schedule = parse_choice<ScheduleKind>(name, "--schedules");
      validate_config(config);
      const Measured m = measure(config, world, steps);
      if (!root) continue;
      char prediction[128];
      if (m.simulated)
        std::snprintf(prediction, sizeof prediction,
                      "simulated from the measured instruction times %.3f (ratio %.2f)",
                      m.simulated_fraction,
                      m.simulated_fraction > 0 ? m.bubble_fraction / m.simulated_fraction : 0.0);
      else
        std::snprintf(prediction, sizeof prediction, "not simulated (the replay needs world = pp)");
      std::printf(
          "%-9s pp %lld × dp %d, %lld micro-batches: step %.1f ms | bubble measured %.3f, %s | "
          "mean F %.2f ms, B %.2f, W %.2f, F&B %.2f\n",
          name.c_str(), static_cast<long long>(config.parallel.pp),
          world.comm->size() / static_cast<int>(config.parallel.pp),
          static_cast<long long>(config.parallel.microbatches), m.step_seconds * 1e3,
          m.bubble_fraction, prediction, m.costs.f * 1e3, m.costs.b * 1e3, m.costs.w * 1e3,
          m.costs.fb * 1e3);
    }
    if (overlap_compare) {
      double exposed[2] = {0, 0}, step[2] = {0, 0}, bytes = 0;
      for (int overlap = 0; overlap < 2; ++overlap) {
        config.parallel.overlap = overlap == 1;
        const Measured m = measure(config, world, steps);
        exposed[overlap] = m.alltoall_exposed, step[overlap] = m.step_seconds;
        bytes = m.alltoall_bytes;
      }
      if (root)
        std::printf(
            "expert all-to-all (%s, ep %lld, %.1f MB per step): exposed %.1f ms per step "
            "without overlap, %.1f ms with (%.2f of it); step %.1f ms → %.1f ms\n",
            std::string(choice_name(config.parallel.schedule)).c_str(),
            static_cast<long long>(config.parallel.ep), bytes / 1e6, exposed[0] * 1e3,
            exposed[1] * 1e3, exposed[0] > 0 ? exposed[1] / exposed[0] : 0.0, step[0] * 1e3,
            step[1] * 1e3);
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "pipeline_schedules: error: %s\n", error.what());
    return 1;
  }
}
