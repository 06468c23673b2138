// Who am I: a rank learns its place in the job from whatever started it — Open MPI's mpirun
// (OMPI_COMM_WORLD_*), slurm's srun (SLURM_*), or the torchrun convention (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). A partial set of variables, or two
// launchers that disagree, is refused with a message listing everything found.
#pragma once

#include <functional>
#include <string>

namespace tandem::comm {

enum class Launcher { kNone, kOpenMpi, kSlurm, kTorchrun };
const char* launcher_name(Launcher launcher);

struct LaunchInfo {
  Launcher launcher = Launcher::kNone;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  int node_id = -1;         // slurm only; otherwise derived from hostnames (topology)
  std::string master_addr;  // torchrun: where the rendezvous store is served
  int master_port = 0;
};

using EnvironmentLookup = std::function<const char*(const char*)>;

// Reads the launcher variables through `lookup` (std::getenv by default; tests pass a map).
LaunchInfo detect_launch(const EnvironmentLookup& lookup);
LaunchInfo detect_launch();

// Tasks on node `node_id` from slurm's SLURM_TASKS_PER_NODE syntax, e.g. "4(x2),3" → 4, 4, 3.
int slurm_tasks_on_node(const std::string& tasks_per_node, int node_id);

}  // namespace tandem::comm
