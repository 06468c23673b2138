// Backend choice and store setup for the world communicator.
#include "comm/world.h"

#include "comm/mpi/mpi_communicator.h"
#include "comm/ucx/ucx_communicator.h"

namespace tandem::comm {

StoreClientOptions job_store_options(const LaunchInfo& launch, int connect_timeout_ms,
                                     const std::string& host_description) {
  StoreClientOptions options;
  options.connect_timeout_ms = connect_timeout_ms;
  // A healthy store answers in milliseconds; a frozen host is reported after 5 s, well inside
  // comm.timeout_s + 10 s even when a wait times out just before.
  options.request_timeout_ms = 5000;
  options.token = launch.store_token;
  options.key_prefix = launch.store_namespace();
  options.host_description = host_description;
  return options;
}

World join_world(const WorldOptions& options) {
  World world;
  world.launch = detect_launch();
  const LaunchInfo& l = world.launch;
  TANDEM_USER_CHECK(options.backend != CommBackend::kNccl,
                    "the world group cannot be NCCL (it bootstraps the others); use auto, mpi or "
                    "ucx");
  WatchdogOptions watchdog_options;
  watchdog_options.timeout_ms = options.timeout_ms;
  watchdog_options.flight_record_dir = options.flight_record_dir;
  const bool mpi = options.backend == CommBackend::kMpi ||
                   (options.backend == CommBackend::kAuto && l.launcher == Launcher::kOpenMpi);
  if (mpi) {
    TANDEM_USER_CHECK(l.launcher == Launcher::kOpenMpi || l.launcher == Launcher::kNone ||
                          l.launcher == Launcher::kSlurm,
                      "the MPI backend needs a job started by mpirun or srun --mpi=pmix, not ",
                      launcher_name(l.launcher), "; use the ucx backend");
    world.comm = MpiCommunicator::world(watchdog_options);
    world.watchdog = world.comm->watchdog();
    world.store = world.watchdog->store();
    world.description = detail::concat("launcher ", launcher_name(l.launcher), ", MPI");
    return world;
  }
  if (l.world_size > 1) {
    TANDEM_USER_CHECK(!l.master_addr.empty() && l.master_port > 0, "rank ", l.rank, " of ",
                      l.world_size, " (", launcher_name(l.launcher),
                      ") has no rendezvous address: set MASTER_ADDR and MASTER_PORT");
    if (l.rank == 0) {
      StoreOptions server_options;
      server_options.token = l.store_token;
      world.store_server =
          std::make_unique<StoreServer>(l.master_addr, l.master_port, server_options);
    }
    world.store = std::make_shared<StoreClient>(l.master_addr, l.master_port,
                                                job_store_options(l, options.timeout_ms, "rank 0"));
  }
  world.description = detail::concat("launcher ", launcher_name(l.launcher), ", UCX");
  if (world.store)
    world.description += detail::concat("; rendezvous store on rank 0 at ", l.master_addr, ":",
                                        l.master_port, "; ", l.rendezvous_source);
  watchdog_options.serves_store = world.store_server != nullptr;
  world.watchdog = std::make_shared<Watchdog>(world.store, l.rank, watchdog_options);
  auto ucx = UcxCommunicator::world(world.store, world.watchdog, l.rank, l.world_size);
  ucx->set_node_collectives(options.node_collectives);
  world.comm = std::move(ucx);
  return world;
}

}  // namespace tandem::comm
