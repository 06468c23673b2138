// The training state on a grid: N steps, every rank's state (its parameters, router biases, AdamW
// moments of the ranges it updates — a ZeRO-1 shard —, step count) copied out and loaded into a
// freshly built engine, then M more steps, give on every rank the bits of N + M steps run straight
// through. Started under mpirun:
//   mpirun -np R state_round_trip --pp P --ep E --schedule S --microbatches M [--zero1]
#include <cstdio>
#include <string>
#include <vector>

#include "comm/world.h"
#include "runtime/core/runtime_context.h"
#include "runtime/train/parallel_engine.h"
#include "tests/multirank/grid_test_config.h"
#include "tests/unit/training_state_copy.h"

namespace {

using namespace tandem;

// The grid tests' model, with more steps and clipping that bites.
Config test_config(int argc, char** argv) {
  Config c = testing::small_grid_config();
  c.train.steps = 5;
  c.train.grad_clip = 0.5;
  for (int i = 1; i < argc; ++i)
    TANDEM_USER_CHECK(testing::apply_grid_flag(c, argc, argv, i), "unknown option ", argv[i]);
  validate_config(c);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Config config = test_config(argc, argv);
    comm::World world = testing::join_test_world(config);
    comm::Communicator& comm = *world.comm;
    constexpr int64_t kFirst = 2;
    const int64_t total = config.train.steps;
    testing::SavedState expected, saved, resumed;
    std::vector<double> straight_losses, resumed_losses;
    {
      ParallelEngine engine(config, world);
      for (int64_t s = 0; s < total; ++s) straight_losses.push_back(engine.train_step(s).loss);
      expected = testing::save_state(engine);
    }
    {
      ParallelEngine engine(config, world);
      for (int64_t s = 0; s < kFirst; ++s) engine.train_step(s);
      saved = testing::save_state(engine);
    }
    {
      ParallelEngine engine(config, world);
      testing::load_state(saved, engine);
      for (int64_t s = kFirst; s < total; ++s) resumed_losses.push_back(engine.train_step(s).loss);
      resumed = testing::save_state(engine);
    }
    int failures = 0;
    for (int64_t s = kFirst; s < total; ++s) {
      if (resumed_losses[s - kFirst] != straight_losses[s]) {
        std::fprintf(stderr, "FAIL: rank %d step %lld: loss %.17g resumed, %.17g straight\n",
                     comm.rank(), static_cast<long long>(s), resumed_losses[s - kFirst],
                     straight_losses[s]);
        ++failures;
      }
    }
    const std::vector<std::string> differ = testing::differences(expected, resumed);
    for (const std::string& name : differ)
      std::fprintf(stderr, "FAIL: rank %d: %s differs after the resume\n", comm.rank(),
                   name.c_str());
    failures += static_cast<int>(differ.size());
    // Under ZeRO-1 the moments are this rank's shard: report how much of the model that is.
    int64_t moment_elements = 0, parameter_elements = 0;
    for (const auto& [name, m] : saved.moments) moment_elements += m.end - m.begin;
    for (const auto& [name, p] : saved.parameters) parameter_elements += p.numel();
    std::printf(
        "rank %d: %zu parameters (%lld elements), %zu router biases, moments of %lld elements, "
        "%zu tensors differ after %lld + %lld steps\n",
        comm.rank(), saved.parameters.size(), static_cast<long long>(parameter_elements),
        saved.buffers.size(), static_cast<long long>(moment_elements), differ.size(),
        static_cast<long long>(kFirst), static_cast<long long>(total - kFirst));
    const double all_failures = comm::all_reduce_value(comm, failures);
    if (comm.rank() == 0) std::printf(all_failures > 0 ? "FAIL\n" : "PASS\n");
    comm.barrier().wait();
    return all_failures > 0 ? 1 : 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "state_round_trip: error: %s\n", error.what());
    return 1;
  }
}
