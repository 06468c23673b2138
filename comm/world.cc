// Backend choice and store setup for the world communicator.
#include "comm/world.h"

#include "comm/mpi/mpi_communicator.h"
#include "comm/ucx/ucx_communicator.h"

namespace tandem::comm {

World join_world(const WorldOptions& options) {
  World world;
  world.launch = detect_launch();
  const LaunchInfo& l = world.launch;
  TANDEM_USER_CHECK(
      options.backend == "auto" || options.backend == "mpi" || options.backend == "ucx",
      "comm backend '", options.backend, "': expected auto, mpi or ucx");
  const bool mpi =
      options.backend == "mpi" || (options.backend == "auto" && l.launcher == Launcher::kOpenMpi);
  if (mpi) {
    TANDEM_USER_CHECK(l.launcher == Launcher::kOpenMpi || l.launcher == Launcher::kNone ||
                          l.launcher == Launcher::kSlurm,
                      "the MPI backend needs a job started by mpirun or srun --mpi=pmix, not ",
                      launcher_name(l.launcher), "; use the ucx backend");
    world.comm = MpiCommunicator::world({options.timeout_ms});
    return world;
  }
  if (l.world_size > 1) {
    TANDEM_USER_CHECK(!l.master_addr.empty() && l.master_port > 0, "rank ", l.rank, " of ",
                      l.world_size, " (", launcher_name(l.launcher),
                      ") has no rendezvous address: set MASTER_ADDR and MASTER_PORT");
    if (l.rank == 0)
      world.store_server = std::make_unique<StoreServer>(l.master_addr, l.master_port);
    world.store = std::make_shared<StoreClient>(l.master_addr, l.master_port, options.timeout_ms);
  }
  world.comm = UcxCommunicator::world(world.store, l.rank, l.world_size, options.timeout_ms);
  return world;
}

}  // namespace tandem::comm
