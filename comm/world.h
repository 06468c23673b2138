// Joining the job: detect the launcher, start or reach the rendezvous store, and build the world
// communicator on the chosen backend. Under mpirun the default is MPI; under torchrun or slurm
// without MPI it is UCX, with the store served by rank 0 at MASTER_ADDR:MASTER_PORT.
#pragma once

#include <memory>
#include <string>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/store.h"

namespace tandem::comm {

struct WorldOptions {
  std::string backend = "auto";  // "auto", "mpi" or "ucx"
  int timeout_ms = 300000;
};

struct World {
  LaunchInfo launch;
  std::unique_ptr<StoreServer> store_server;  // rank 0 of a store-bootstrapped job
  std::shared_ptr<StoreClient> store;
  std::unique_ptr<Communicator> comm;
};

World join_world(const WorldOptions& options = {});

}  // namespace tandem::comm
