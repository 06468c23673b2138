// Backend choice and store setup for the world communicator, and the order of the timeouts.
#include "comm/world.h"

#include "comm/mpi/mpi_communicator.h"
#include "comm/ucx/ucx_communicator.h"
#include "runtime/core/logging.h"

namespace tandem::comm {

namespace {

std::string seconds(int ms) {
  return detail::concat(ms / 1000.0, " s");
}

// Rank 0 serves the store, on MASTER_PORT or, next to torchrun's own store, on another port.
std::unique_ptr<StoreServer> serve_store(const LaunchInfo& l) {
  StoreOptions server_options;
  server_options.token = l.store_token;
  if (l.store_port != l.master_port)
    log_info("rank 0 serves the rendezvous store on ", l.master_addr, ":", l.store_port, " (",
             l.store_port_origin,
             l.torchrun_agent_store && l.store_port_origin == "MASTER_PORT + 1"
                 ? detail::concat(": torchrun's agent serves its own store on MASTER_PORT ",
                                  l.master_port, "; set TANDEM_STORE_PORT to choose another port")
                 : "",
             ")");
  try {
    return std::make_unique<StoreServer>(l.master_addr, l.store_port, server_options);
  } catch (const Error& error) {
    if (l.store_port == l.master_port) throw;
    throw Error(detail::concat(error.what(), "; the store's port ", l.store_port, " comes from ",
                               l.store_port_origin,
                               ": set TANDEM_STORE_PORT to a free port, the same on every rank"));
  }
}

}  // namespace

void check_timeout_order(int collective_timeout_ms, int rendezvous_timeout_ms,
                         const LaunchInfo& launch) {
  const int heartbeat_ms = launch.heartbeat_fd >= 0 ? launch.heartbeat_timeout_ms : 0;
  if (heartbeat_ms > 0) {
    TANDEM_USER_CHECK(collective_timeout_ms < heartbeat_ms,
                      "timeouts out of order: comm.timeout_s = ", seconds(collective_timeout_ms),
                      " is not below tandem-launch's heartbeat timeout of ", seconds(heartbeat_ms),
                      " (TANDEM_HEARTBEAT_TIMEOUT_MS=", heartbeat_ms,
                      "): the launcher would end a rank stuck in a collective before the watchdog "
                      "could name the operation. Set comm.timeout_s below ",
                      heartbeat_ms / 1000.0, ", or raise tandem-launch's --heartbeat-timeout-s");
    TANDEM_USER_CHECK(heartbeat_ms < rendezvous_timeout_ms,
                      "timeouts out of order: tandem-launch's heartbeat timeout of ",
                      seconds(heartbeat_ms), " (TANDEM_HEARTBEAT_TIMEOUT_MS=", heartbeat_ms,
                      ") is not below comm.rendezvous_timeout_s = ", seconds(rendezvous_timeout_ms),
                      ": a rank waiting to join would give up before the launcher restarts a "
                      "frozen peer. Set comm.rendezvous_timeout_s above ",
                      heartbeat_ms / 1000.0, ", or lower tandem-launch's --heartbeat-timeout-s");
  }
  TANDEM_USER_CHECK(
      collective_timeout_ms < rendezvous_timeout_ms,
      "timeouts out of order: comm.timeout_s = ", seconds(collective_timeout_ms),
      " is not below comm.rendezvous_timeout_s = ", seconds(rendezvous_timeout_ms),
      ": the wait to join, for ranks that may start minutes apart, is the longest of the job's "
      "timeouts (collective < heartbeat < rendezvous). Set comm.rendezvous_timeout_s "
      "above ",
      collective_timeout_ms / 1000.0, ", or lower comm.timeout_s");
}

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
    if (l.rank == 0 && !l.store_served_by_launcher) world.store_server = serve_store(l);
    world.store = std::make_shared<StoreClient>(
        l.master_addr, l.store_port,
        job_store_options(l, options.rendezvous_timeout_ms, l.store_host_description()));
  }
  world.description = detail::concat("launcher ", launcher_name(l.launcher), ", UCX");
  if (world.store)
    world.description += detail::concat("; rendezvous store on rank 0 at ", l.master_addr, ":",
                                        l.master_port, "; ", l.rendezvous_source);
  watchdog_options.serves_store = world.store_server != nullptr;
  world.watchdog = std::make_shared<Watchdog>(world.store, l.rank, watchdog_options);
  auto ucx = UcxCommunicator::world(world.store, world.watchdog, l.rank, l.world_size,
                                    options.rendezvous_timeout_ms);
  ucx->set_node_collectives(options.node_collectives);
  world.comm = std::move(ucx);
  return world;
}

}  // namespace tandem::comm
