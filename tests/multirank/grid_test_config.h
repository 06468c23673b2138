// The small MoE model the multi-rank grid tests train — 1 dense + 3 MoE layers, 8 experts top-2
// + 1 shared, so every pipeline stage of every tested grid has layers and every expert group has
// experts — the grid flags they share (--pp, --ep, --schedule, --microbatches, --zero1), and how
// they join the job.
#pragma once

#include <string>

#include "comm/world.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/runtime_context.h"

namespace tandem::testing {

inline Config small_grid_config() {
  Config c;
  c.model.vocab_size = 256;
  c.model.seq_len = 16;
  c.model.d_model = 32;
  c.model.n_layers = 4;
  c.model.n_dense_layers = 1;
  c.model.n_heads = 2;
  c.model.d_ff = 64;
  c.model.n_routed_experts = 8;
  c.model.n_shared_experts = 1;
  c.model.top_k = 2;
  c.model.d_expert = 32;
  c.model.router_bias_update_rate = 0.01;  // visible bias moves, so the global load matters
  c.train.batch_size = 16;
  c.train.eval_interval = 0;
  c.train.warmup_steps = 1;
  c.train.lr = 1e-3;
  c.train.min_lr = 1e-4;
  c.data.path = std::string(TANDEM_SOURCE_DIR) + "/data/kjv.txt";
  c.comm.timeout_s = 120;
  return c;
}

// Applies argv[i] if it is a grid flag (taking its value from argv[i + 1] and advancing i);
// false for any other flag, which the caller handles.
inline bool apply_grid_flag(Config& c, int argc, char** argv, int& i) {
  const std::string arg = argv[i];
  auto next = [&]() -> std::string {
    TANDEM_USER_CHECK(i + 1 < argc, arg, " needs a value");
    return argv[++i];
  };
  if (arg == "--pp")
    c.parallel.pp = std::stoi(next());
  else if (arg == "--ep")
    c.parallel.ep = std::stoi(next());
  else if (arg == "--schedule")
    c.parallel.schedule = parse_choice<ScheduleKind>(next(), "--schedule");
  else if (arg == "--microbatches")
    c.parallel.microbatches = std::stoi(next());
  else if (arg == "--zero1")
    c.parallel.zero1 = true;
  else
    return false;
  return true;
}

// Joins the job's world as every grid test does (MPI under mpirun, UCX when started the torchrun
// way), with this rank in the log lines and one thread per rank.
inline comm::World join_test_world(const Config& c) {
  comm::World world = comm::join_world({CommBackend::kAuto, comm_timeout_ms(c.comm), "", true});
  runtime().rank = world.comm->rank();
  set_thread_count(1);
  return world;
}

}  // namespace tandem::testing
