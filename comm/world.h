// Joining the job: detect the launcher, start or reach the rendezvous store, and build the world
// communicator on the chosen backend. Under mpirun the default is MPI; under torchrun or slurm
// without MPI it is UCX, with the store served by rank 0 at MASTER_ADDR:MASTER_PORT. Either way
// one watchdog (flight recorder and heartbeat) serves every group of the process.
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
  int timeout_ms = 300000;
  std::string flight_record_dir;  // see WatchdogOptions
  bool node_collectives = true;   // see P2PCommunicator::set_node_collectives
};

struct World {
  LaunchInfo launch;
  std::unique_ptr<StoreServer> store_server;  // rank 0 of a store-bootstrapped job
  std::shared_ptr<StoreClient> store;
  std::shared_ptr<Watchdog> watchdog;
  std::unique_ptr<Communicator> comm;
  // Who started the job and how it joined, for the log: "launcher slurm, UCX; rendezvous store on
  // rank 0 at node01:29537; host: first of SLURM_STEP_NODELIST, port: 29500 + SLURM_JOB_ID %
  // 1000".
  std::string description;
};

World join_world(const WorldOptions& options = {});

// How this job's ranks talk to its store: the namespace of the job and attempt, its token, and
// which rank serves it (for the messages when it stops answering).
StoreClientOptions job_store_options(const LaunchInfo& launch, int connect_timeout_ms,
                                     const std::string& host_description);

}  // namespace tandem::comm
