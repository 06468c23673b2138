// Joining the job: detect the launcher, start or reach the rendezvous store, and build the world
// communicator on the chosen backend. Under mpirun the default is MPI; under torchrun or slurm
// without MPI it is UCX, with the store served at MASTER_ADDR by rank 0 (on MASTER_PORT, or next
// to torchrun's own store; see LaunchInfo::store_port) or, under tandem-launch, by the launcher.
// Either way one watchdog (flight recorder and heartbeat) serves every group of the process. Also
// here: the order the job's timeouts must keep, checked before joining.
#pragma once

#include <memory>
#include <string>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/store.h"
#include "comm/watchdog.h"
#include "runtime/core/choices.h"

namespace tandem::comm {

struct WorldOptions {
  CommBackend backend = CommBackend::kAuto;  // auto, mpi or ucx
  int timeout_ms = 300000;                   // of every collective (comm.timeout_s)
  std::string flight_record_dir;             // see WatchdogOptions
  bool node_collectives = true;              // see P2PCommunicator::set_node_collectives
  // How long a rank waits to join: to reach the store, and for every peer's address
  // (comm.rendezvous_timeout_s).
  int rendezvous_timeout_ms = 600000;
};

struct World {
  LaunchInfo launch;
  // Rank 0 of a store-bootstrapped job, unless tandem-launch serves the store.
  std::unique_ptr<StoreServer> store_server;
  std::shared_ptr<StoreClient> store;
  std::shared_ptr<Watchdog> watchdog;
  std::unique_ptr<Communicator> comm;
  // Who started the job and how it joined, for the log: "launcher slurm, UCX; rendezvous store on
  // rank 0 at node01:29537; host: first of SLURM_STEP_NODELIST, port: 29500 + SLURM_JOB_ID %
  // 1000".
  std::string description;
};

World join_world(const WorldOptions& options = {});

// The job's timeouts must be ordered collective < heartbeat < rendezvous. A collective's deadline
// (comm.timeout_s) passes before tandem-launch calls a silent rank frozen (its heartbeat timeout,
// when it watches this rank), so that a rank stuck on a peer is reported by the watchdog, naming
// the operation and the ranks, before the launcher ends the job; and a rank waiting to join
// (comm.rendezvous_timeout_s) outwaits both, so that a peer frozen while the job assembles is
// restarted by the launcher, a fault, instead of being reported as a rank that never came, which
// is not restarted. Throws an Error with the numbers and the key or flag to change.
void check_timeout_order(int collective_timeout_ms, int rendezvous_timeout_ms,
                         const LaunchInfo& launch);

// How this job's ranks talk to its store: the namespace of the job and attempt, its token, and
// which rank serves it (for the messages when it stops answering).
StoreClientOptions job_store_options(const LaunchInfo& launch, int connect_timeout_ms,
                                     const std::string& host_description);

}  // namespace tandem::comm
