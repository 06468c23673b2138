// The key test of the parallelism: a run on a (pp, dp, ep, schedule, zero1) grid gives the losses
// and final parameters of the single-process run of the same model, seed and global batch.
// Started under mpirun; every rank trains its part, rank 0 then gathers every parameter (checking
// that replicas — data-parallel copies and DualPipe mirrors — agree bit for bit), trains the
// single-process reference itself and compares.
//   mpirun -np N parallel_equivalence --pp P --ep E --schedule S --microbatches M [--zero1]
//       [--steps K] [--fp8] [--node-limited] [--hierarchical RANKS_PER_NODE]
//       [--ordered-channels] [--loss-rtol X] [--param-atol Y|none] [--displacement-rtol Z]
// --ordered-channels runs the pipeline's messages on the GPU's transport, ordered channels matched
// by order alone, over the host backend.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "comm/world.h"
#include "runtime/core/logging.h"
#include "runtime/core/runtime_context.h"
#include "runtime/train/parallel_engine.h"
#include "runtime/train/trainer.h"
#include "tests/multirank/grid_test_config.h"

namespace {

using namespace tandem;

// The grid tests' model (grid_test_config.h), 3 steps.
Config test_config(int argc, char** argv) {
  Config c = testing::small_grid_config();
  c.model.init_std = 0.05;
  c.train.steps = 3;
  c.train.eval_batches = 1;
  bool messages = false;
  for (int i = 1; i < argc; ++i) {
    if (testing::apply_grid_flag(c, argc, argv, i)) continue;
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      TANDEM_USER_CHECK(i + 1 < argc, arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--no-overlap")
      c.parallel.overlap = false;
    else if (arg == "--steps")
      c.train.steps = std::stoi(next());
    else if (arg == "--fp8")
      c.fp8.enabled = true;
    else if (arg == "--messages")
      messages = true;
    else if (arg == "--ordered-channels")
      continue;                          // an engine option, read in main
    else if (arg == "--hierarchical") {  // nodes of this many ranks (simulated)
      c.comm.dispatch = ExpertDispatchMode::kHierarchical;
      c.comm.ranks_per_node = std::stoi(next());
    } else if (arg == "--node-limited") {  // 2 groups (nodes) of 4 experts, each token on 1
      c.model.n_expert_groups = 2;
      c.model.max_groups_per_token = 1;
    } else if (arg == "--loss-rtol" || arg == "--param-atol" || arg == "--displacement-rtol")
      next();
    else
      TANDEM_USER_CHECK(false, "unknown option ", arg);
  }
  // Expert rows in shared memory (the flat dispatch, or the hierarchical one's fan-out inside a
  // node) unless asked otherwise, and refused (not silently replaced by messages) if the ranks
  // cannot share memory.
  c.comm.expert_exchange = messages ? ExpertExchange::kMessages : ExpertExchange::kSharedMemory;
  validate_config(c);
  return c;
}

// A flag's value; "none" is +inf (that bound is not checked).
double flag_value(int argc, char** argv, const char* flag, double fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0)
      return std::strcmp(argv[i + 1], "none") == 0 ? INFINITY : std::stod(argv[i + 1]);
  return fallback;
}

// Differences are compared as "larger than the worst so far"; a NaN would compare false and pass,
// so it counts as infinitely large.
double nan_is_infinite(double x) {
  return std::isnan(x) ? INFINITY : x;
}

// name → values (as double), of every parameter this rank holds.
std::string serialise(const std::vector<Parameter*>& params) {
  std::string out;
  for (const Parameter* p : params) {
    const Tensor wide = p->value;
    const int64_t n = wide.numel(), len = static_cast<int64_t>(p->name.size());
    out.append(reinterpret_cast<const char*>(&len), sizeof len);
    out.append(p->name);
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
    for (int64_t i = 0; i < n; ++i) {
      const double v = wide.dtype() == DType::kF64 ? wide.data<double>()[i] : wide.data<float>()[i];
      out.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  return out;
}

void deserialise(const char* data, size_t size, std::map<std::string, std::vector<double>>& into,
                 int rank, int& mismatches) {
  size_t at = 0;
  auto read_i64 = [&] {
    int64_t v;
    std::memcpy(&v, data + at, sizeof v);
    at += sizeof v;
    return v;
  };
  while (at < size) {
    const int64_t len = read_i64();
    std::string name(data + at, len);
    at += len;
    const int64_t n = read_i64();
    std::vector<double> values(n);
    std::memcpy(values.data(), data + at, n * sizeof(double));
    at += n * sizeof(double);
    auto [it, fresh] = into.emplace(name, values);
    if (!fresh && it->second != values) {
      std::fprintf(stderr, "FAIL: replica of %s on rank %d differs from another rank's copy\n",
                   name.c_str(), rank);
      ++mismatches;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Config config = test_config(argc, argv);
    comm::World world = testing::join_test_world(config);
    comm::Communicator& comm = *world.comm;
    std::vector<double> losses, norms;
    double held_out = 0;
    std::string mine;
    {
      ParallelEngineOptions options;
      for (int i = 1; i < argc; ++i)
        options.ordered_pipeline_channels |= std::strcmp(argv[i], "--ordered-channels") == 0;
      ParallelEngine engine(config, world, options);
      for (int64_t s = 0; s < config.train.steps; ++s) {
        const StepReport report = engine.train_step(s);
        losses.push_back(report.loss);
        norms.push_back(report.grad_norm);
      }
      held_out = engine.evaluate();
      mine = serialise(engine.parameters());
      engine.finish();
    }
    // Gather every rank's parameters on rank 0.
    const std::vector<std::string> all = comm::gather_strings(comm, mine, 0);
    if (comm.rank() != 0) {
      comm.barrier().wait();
      return 0;
    }
    std::map<std::string, std::vector<double>> params;
    int failures = 0;
    for (int r = 0; r < comm.size(); ++r)
      deserialise(all[r].data(), all[r].size(), params, r, failures);

    // The single-process reference, on rank 0, and its parameters before training: what the
    // grid's parameters moved is compared with what the reference's moved.
    SingleProcessEngine reference(config);
    std::map<std::string, std::vector<double>> initial;
    for (Parameter* p : reference.model().parameters())
      initial[p->name].assign(p->value.data<float>(), p->value.data<float>() + p->value.numel());
    // Bounds. Losses and gradient norms differ only by the order of fp32 sums (micro-batches,
    // ranks, reductions): 2e-5 relative. Parameters pass through AdamW, which maps a gradient
    // element that is zero up to rounding to an update of up to ±lr, so single elements may differ
    // by a good part of what the parameters moved at all; a gradient that misses a micro-batch or
    // a replica moves most elements of a tensor differently. So two checks: the largest element
    // difference (absolute, --param-atol, 1e-4 against a largest movement of about lr·steps =
    // 3e-3), and per tensor the difference of the displacements, ‖Δgrid − Δref‖ / ‖Δref‖
    // (--displacement-rtol), which stays small under rounding and is of order 1 for a gradient
    // that is wrong. A bound the run could not exceed would make the test vacuous: both are
    // checked against what the reference actually moved.
    const double loss_rtol = flag_value(argc, argv, "--loss-rtol", 2e-5);
    const double param_atol = flag_value(argc, argv, "--param-atol", 1e-4);
    const double displacement_rtol = flag_value(argc, argv, "--displacement-rtol", 1e-2);
    double worst_loss = 0, worst_param = 0, worst_displacement = 0, largest_movement = 0;
    std::string worst_name, worst_displacement_name;
    for (int64_t s = 0; s < config.train.steps; ++s) {
      const StepReport expected = reference.train_step(s);
      const double rel = std::abs(losses[s] - expected.loss) / std::abs(expected.loss);
      const double norm_rel =
          std::abs(norms[s] - expected.grad_norm) / std::abs(expected.grad_norm);
      worst_loss = std::max({worst_loss, nan_is_infinite(rel), nan_is_infinite(norm_rel)});
      std::printf(
          "step %lld: loss %.8f (single process %.8f, relative difference %.2e), "
          "gradient norm %.6f (%.6f, %.2e)\n",
          static_cast<long long>(s), losses[s], expected.loss, rel, norms[s], expected.grad_norm,
          norm_rel);
    }
    {
      const double expected = reference.evaluate();
      const double rel = std::abs(held_out - expected) / std::abs(expected);
      worst_loss = std::max(worst_loss, nan_is_infinite(rel));
      std::printf("held-out loss %.8f (single process %.8f, relative difference %.2e)\n", held_out,
                  expected, rel);
    }
    size_t compared = 0;
    for (Parameter* p : reference.model().parameters()) {
      auto it = params.find(p->name);
      if (it == params.end()) {
        std::fprintf(stderr, "FAIL: no rank holds %s\n", p->name.c_str());
        ++failures;
        continue;
      }
      ++compared;
      const std::vector<double>& start = initial[p->name];
      double error2 = 0, moved2 = 0;
      for (int64_t i = 0; i < p->value.numel(); ++i) {
        const double ref = p->value.data<float>()[i];
        const double diff = nan_is_infinite(std::abs(it->second[i] - ref));
        if (diff > worst_param) worst_param = diff, worst_name = p->name;
        largest_movement = std::max(largest_movement, std::abs(ref - start[i]));
        error2 += diff * diff;
        moved2 += (ref - start[i]) * (ref - start[i]);
      }
      const double displacement = moved2 > 0   ? nan_is_infinite(std::sqrt(error2 / moved2))
                                  : error2 > 0 ? INFINITY
                                               : 0;
      if (displacement > worst_displacement)
        worst_displacement = displacement, worst_displacement_name = p->name;
    }
    if (compared != params.size()) {
      std::fprintf(stderr, "FAIL: the grid holds %zu parameters, the model %zu\n", params.size(),
                   compared);
      ++failures;
    }
    std::printf(
        "largest loss or gradient-norm difference %.2e (bound %.1e); largest parameter difference "
        "%.2e in %s (bound %.1e; the reference moved parameters by up to %.2e); largest "
        "displacement difference %.2e in %s (bound %.1e); %zu parameters\n",
        worst_loss, loss_rtol, worst_param, worst_name.c_str(), param_atol, largest_movement,
        worst_displacement, worst_displacement_name.c_str(), displacement_rtol, compared);
    if (worst_loss > loss_rtol || worst_param > param_atol ||
        worst_displacement > displacement_rtol)
      ++failures;
    if (std::isfinite(param_atol) && param_atol >= largest_movement) {
      std::fprintf(stderr,
                   "FAIL: --param-atol %.1e is no check: no parameter moved that far (%.2e)\n",
                   param_atol, largest_movement);
      ++failures;
    }
    if (displacement_rtol >= 0.5) {
      std::fprintf(stderr, "FAIL: --displacement-rtol %.2f would pass a wrong gradient\n",
                   displacement_rtol);
      ++failures;
    }
    comm.barrier().wait();
    std::printf(failures ? "FAIL\n" : "PASS\n");
    return failures ? 1 : 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "parallel_equivalence: error: %s\n", error.what());
    return 1;
  }
}
