// Observes, from the recorded events of a training step (runtime/core/step_events.h), three things
// the design promises and step times alone cannot show:
//   1. a gradient reduction starts before the last backward instruction of the step begins (the
//      reductions overlap the backward instead of all waiting for its end);
//   2. weight-gradient work runs while an expert all-to-all is in flight: it begins after the
//      all-to-all started and before the injected latency could have let it complete, and ends
//      before the task saw it complete;
//   3. pipeline receives are posted before the matching send starts (so messages land in posted
//      buffers instead of waiting for the receiver to reach the instruction that needs them).
// Every expert all-to-all is delayed by --latency-us (LatencyCommunicator), as a slower network
// would, so "in flight" is certain, not a matter of timing. Under mpirun, on one machine: the
// steady clock is shared by the ranks' processes, so their events can be compared.
//   mpirun -np 4 step_observation [--latency-us 3000] [--min-posted-ahead 0.75]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "comm/world.h"
#include "runtime/core/runtime_context.h"
#include "runtime/train/parallel_engine.h"
#include "tests/multirank/grid_test_config.h"
#include "tests/multirank/latency_communicator.h"

namespace {

using namespace tandem;

double flag(int argc, char** argv, const char* name, double fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::stod(argv[i + 1]);
  return fallback;
}

Config test_config() {
  Config c;
  c.model.vocab_size = 256;
  c.model.seq_len = 32;
  c.model.d_model = 64;
  c.model.n_layers = 4;
  c.model.n_dense_layers = 1;
  c.model.n_heads = 2;
  c.model.d_ff = 128;
  c.model.n_routed_experts = 8;
  c.model.top_k = 2;
  c.model.d_expert = 64;
  c.train.steps = 2;
  c.train.batch_size = 16;
  c.train.eval_interval = 0;
  c.train.warmup_steps = 1;
  c.data.path = std::string(TANDEM_SOURCE_DIR) + "/data/kjv.txt";
  c.comm.timeout_s = 120;
  c.parallel.pp = 2;
  c.parallel.ep = 2;
  c.parallel.schedule = ScheduleKind::kDualPipe;
  c.parallel.microbatches = 8;
  validate_config(c);
  return c;
}

bool is_backward(const parallel::Instruction& ins) {
  return ins.op == parallel::Op::kBackward || ins.op == parallel::Op::kBackwardInput ||
         ins.op == parallel::Op::kForwardBackward;
}

struct RankReport {
  bool reduction_before_last_backward = false;
  double first_reduction_s = -1, last_backward_begin_s = -1;
  int weights_in_flight = 0;  // weight-gradient runs inside an all-to-all in flight
};

// Checks 1 and 2 on one rank's events.
RankReport check_rank(const std::vector<StepEvent>& events,
                      const std::vector<parallel::Instruction>& program, double latency_s) {
  RankReport report;
  int64_t last_backward = -1;
  for (size_t i = 0; i < program.size(); ++i)
    if (is_backward(program[i])) last_backward = static_cast<int64_t>(i);
  std::map<int64_t, double> a2a_started, a2a_done;
  std::vector<std::pair<double, double>> weights;  // [begin, end]
  for (const StepEvent& e : events) {
    switch (e.kind) {
      case StepEventKind::kInstructionBegin:
        if (e.id == last_backward) report.last_backward_begin_s = e.time_s;
        break;
      case StepEventKind::kReductionStarted:
        if (report.first_reduction_s < 0) report.first_reduction_s = e.time_s;
        break;
      case StepEventKind::kAllToAllStarted:
        a2a_started[e.id] = e.time_s;
        break;
      case StepEventKind::kAllToAllDone:
        a2a_done[e.id] = e.time_s;
        break;
      case StepEventKind::kWeightGradientBegin:
        weights.push_back({e.time_s, -1});
        break;
      case StepEventKind::kWeightGradientEnd:
        if (!weights.empty()) weights.back().second = e.time_s;
        break;
      default:
        break;
    }
  }
  report.reduction_before_last_backward = report.first_reduction_s >= 0 &&
                                          report.last_backward_begin_s >= 0 &&
                                          report.first_reduction_s < report.last_backward_begin_s;
  for (const auto& [begin, end] : weights) {
    for (const auto& [id, started] : a2a_started) {
      auto done = a2a_done.find(id);
      if (done == a2a_done.end()) continue;
      if (started <= begin && begin < started + latency_s && end >= 0 && end <= done->second) {
        ++report.weights_in_flight;
        break;
      }
    }
  }
  return report;
}

std::string serialise(const std::vector<StepEvent>& events, const std::vector<int>& pipeline) {
  std::string out;
  const int64_t n = static_cast<int64_t>(pipeline.size());
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out.append(reinterpret_cast<const char*>(pipeline.data()), pipeline.size() * sizeof(int));
  out.append(reinterpret_cast<const char*>(events.data()), events.size() * sizeof(StepEvent));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const double latency_s = flag(argc, argv, "--latency-us", 3000) * 1e-6;
    const double min_posted_ahead = flag(argc, argv, "--min-posted-ahead", 0.75);
    const Config config = test_config();
    comm::World world = testing::join_test_world(config);
    comm::Communicator& comm = *world.comm;
    TANDEM_USER_CHECK(comm.size() == 4, "run under mpirun -np 4");
    StepEventLog log;
    ParallelEngineOptions options;
    options.events = &log;
    options.wrap_expert_group = [&](comm::Communicator& group) {
      return std::make_unique<testing::LatencyCommunicator>(
          group, std::chrono::microseconds(static_cast<int64_t>(latency_s * 1e6)));
    };
    RankReport report;
    std::string mine;
    {
      ParallelEngine engine(config, world, options);
      engine.train_step(0);  // warm-up
      log.clear();
      engine.train_step(1);
      const auto& program = engine.schedule().ranks[engine.grid().coords().stage];
      report = check_rank(log.events(), program, latency_s);
      mine = serialise(log.events(), engine.grid().pipeline().world_ranks());
      engine.finish();
    }
    int failures = 0;
    std::printf(
        "rank %d: first reduction started %+.2f ms from the last backward instruction's begin "
        "(%s); %d weight-gradient runs inside an all-to-all in flight\n",
        comm.rank(), (report.first_reduction_s - report.last_backward_begin_s) * 1e3,
        report.reduction_before_last_backward ? "before: ok" : "NOT before",
        report.weights_in_flight);
    if (!report.reduction_before_last_backward) ++failures;
    if (report.weights_in_flight == 0) ++failures;

    // Check 3 across ranks, on rank 0: every pipeline send matched with its receive.
    const std::vector<std::string> all = comm::gather_strings(comm, mine, 0);
    if (comm.rank() == 0) {
      // (receiver world rank, sender world rank, tag) → time the receive was posted
      std::map<std::tuple<int, int, int64_t>, double> posted;
      std::vector<std::tuple<int, int, int64_t, double>> sends;  // sender, receiver, tag, time
      for (int r = 0; r < comm.size(); ++r) {
        const char* at = all[r].data();
        int64_t n;
        std::memcpy(&n, at, sizeof n);
        std::vector<int> pipeline(n);
        std::memcpy(pipeline.data(), at + sizeof n, n * sizeof(int));
        const size_t header = sizeof n + n * sizeof(int);
        std::vector<StepEvent> events((all[r].size() - header) / sizeof(StepEvent));
        std::memcpy(events.data(), at + header, events.size() * sizeof(StepEvent));
        for (const StepEvent& e : events) {
          if (e.kind == StepEventKind::kReceivePosted)
            posted[{r, pipeline[e.peer], e.id}] = e.time_s;
          if (e.kind == StepEventKind::kSendStarted)
            sends.emplace_back(r, pipeline[e.peer], e.id, e.time_s);
        }
      }
      int ahead = 0, unmatched = 0;
      for (const auto& [from, to, tag, started] : sends) {
        auto it = posted.find({to, from, tag});
        if (it == posted.end()) {
          ++unmatched;
          continue;
        }
        if (it->second < started) ++ahead;
      }
      const double fraction = sends.empty() ? 0.0 : static_cast<double>(ahead) / sends.size();
      std::printf(
          "pipeline messages: %zu sent, %d with the receive posted before the send started "
          "(%.2f, bound %.2f), %d without a matching receive\n",
          sends.size(), ahead, fraction, min_posted_ahead, unmatched);
      if (sends.empty() || unmatched > 0 || fraction < min_posted_ahead) ++failures;
    }
    const int total = static_cast<int>(
        comm::all_reduce_value(comm, static_cast<double>(failures), comm::ReduceOp::kSum));
    if (comm.rank() == 0) std::printf(total ? "FAIL\n" : "PASS\n");
    return total ? 1 : 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "step_observation: error: %s\n", error.what());
    return 1;
  }
}
