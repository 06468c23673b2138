// Overlap is real: with a latency injected into every expert all-to-all (LatencyCommunicator),
// the executor that interleaves each F&B pair grows its step by at most a given fraction
// (default 0.4) of what the step grows by when each pair runs forward then backward.
//
// Two ranks (dp 2, ep 2) on one pipeline stage run "F0.0, F0.m&B0.(m−1) for m = 1..M−1, B0.(M−1)":
// every micro-batch but the first and last is in a pair, as in DualPipe's steady state. One stage
// keeps the measurement clean on a 2-core machine: with the 4 ranks DualPipe needs, a rank that
// sleeps on an all-to-all hands its core to another rank, which hides latency in both orders
// alike. bench/pipeline_schedules measures the DualPipe grid itself.
//   mpirun -np 2 overlap_test [--latency-us 1000] [--microbatches 24] [--steps 8] [--bound 0.4]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "comm/world.h"
#include "parallelism/executor.h"
#include "parallelism/process_grid.h"
#include "runtime/core/random.h"
#include "runtime/core/runtime_context.h"
#include "tests/multirank/latency_communicator.h"

namespace {

using namespace tandem;
using namespace tandem::parallel;

double flag(int argc, char** argv, const char* name, double fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::stod(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto latency =
        std::chrono::microseconds(static_cast<int64_t>(flag(argc, argv, "--latency-us", 1000)));
    const int steps = static_cast<int>(flag(argc, argv, "--steps", 8));
    const int64_t microbatches = static_cast<int64_t>(flag(argc, argv, "--microbatches", 24));
    const double bound = flag(argc, argv, "--bound", 0.4);
    ModelConfig model;
    model.seq_len = 128;
    model.d_model = 128;
    model.n_layers = 2;
    model.n_dense_layers = 0;
    model.n_heads = 4;
    model.n_routed_experts = 8;
    model.top_k = 2;
    model.d_expert = 256;

    comm::World world = comm::join_world({CommBackend::kAuto, 120000, "", true});
    comm::Communicator& comm = *world.comm;
    TANDEM_USER_CHECK(comm.size() == 2, "run under mpirun -np 2");
    runtime().rank = comm.rank();
    set_thread_count(1);
    const GridShape shape{1, 2, 2};
    ProcessGrid grid(shape, ScheduleKind::k1F1B, comm.rank(), comm, comm, comm);
    ModelChunk chunk(model, 7, stage_chunk_spec(model, 0, 1, {grid.coords().ep_index, 2}));
    testing::LatencyCommunicator forward_group(grid.expert(), latency);
    testing::LatencyCommunicator backward_group(grid.expert_backward(), latency);
    comm::ExpertDispatcher forward(forward_group, model.n_routed_experts);
    comm::ExpertDispatcher backward(backward_group, model.n_routed_experts);

    Schedule program{ScheduleKind::k1F1B, 1, microbatches, {{}}};
    auto& list = program.ranks[0];
    list.push_back({Op::kForward, 0, 0, 0, 0});
    for (int64_t m = 1; m < microbatches; ++m)
      list.push_back({Op::kForwardBackward, 0, m, 0, m - 1});
    list.push_back({Op::kBackward, 0, microbatches - 1, 0, 0});
    check_schedule(program);

    MicroBatches data;
    for (int64_t m = 0; m < microbatches; ++m) {
      for (auto* v : {&data.tokens, &data.targets}) {
        v->push_back(Tensor::empty({model.seq_len}, DType::kI32));
        for (int64_t t = 0; t < model.seq_len; ++t)
          v->back().data<int32_t>()[t] =
              static_cast<int32_t>(random_bits(comm.rank() * 1000 + m, v == &data.tokens, t) % 256);
      }
    }

    double t[2][2];  // [overlap][latency on]
    for (int overlap = 0; overlap < 2; ++overlap) {
      PipelineExecutor executor(PipelineLayout(ScheduleKind::k1F1B, 1), 0, grid.pipeline(),
                                {&chunk}, {ChunkComm{&forward, &backward, nullptr}}, overlap == 1);
      // Latency off and on alternate step by step, so that drifts of the machine cancel.
      std::vector<double> times[2];
      for (int s = 0; s <= steps; ++s) {
        for (int slow = 0; slow < 2; ++slow) {
          forward_group.set_latency(slow ? latency : std::chrono::microseconds(0));
          backward_group.set_latency(slow ? latency : std::chrono::microseconds(0));
          const double seconds = comm::all_reduce_value(
              comm, executor.run(list, data, 1e-4).seconds, comm::ReduceOp::kMax);
          if (s > 0) times[slow].push_back(seconds);  // the first warms up
        }
      }
      for (int slow = 0; slow < 2; ++slow) {
        std::sort(times[slow].begin(), times[slow].end());
        t[overlap][slow] = times[slow][times[slow].size() / 2];
      }
    }
    const double grew_sequential = t[0][1] - t[0][0], grew_overlapped = t[1][1] - t[1][0];
    const double ratio = grew_overlapped / grew_sequential;
    const bool pass = grew_sequential > 0 && ratio <= bound;
    if (comm.rank() == 0) {
      std::printf(
          "step time, forward then backward: %.1f ms → %.1f ms with %lld us per "
          "all-to-all (+%.1f ms)\n",
          t[0][0] * 1e3, t[0][1] * 1e3, static_cast<long long>(latency.count()),
          grew_sequential * 1e3);
      std::printf("step time, interleaved:           %.1f ms → %.1f ms (+%.1f ms)\n", t[1][0] * 1e3,
                  t[1][1] * 1e3, grew_overlapped * 1e3);
      std::printf("growth ratio %.2f (bound %.2f): %s\n", ratio, bound, pass ? "PASS" : "FAIL");
    }
    return pass ? 0 : 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "overlap_test: error: %s\n", error.what());
    return 1;
  }
}
