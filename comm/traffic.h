// Which backend carries which traffic: pipeline send/recv, the expert all-to-all and data-parallel
// reductions each have a configured backend ("auto" picks by device: on the CPU MPI when the job
// has it, else UCX; on the GPU NCCL), and a job opens one world communicator per
// backend it uses, from which the parallel groups are split.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "comm/world.h"
#include "runtime/core/config.h"
#include "runtime/core/device.h"

namespace tandem::comm {

enum class Traffic { kPipeline, kExpert, kData };
const char* traffic_name(Traffic traffic);

// The backend for a traffic class: the configured one, or for "auto" the device's default
// (GPU: NCCL; CPU: MPI when the job has MPI, else UCX).
CommBackend backend_for(Traffic traffic, const CommConfig& config, DeviceType device,
                        bool mpi_available);

// One world communicator per backend, opened on first use from the joined world (MPI and UCX
// worlds share the job's store; NCCL is bootstrapped over the world communicator).
class BackendWorlds {
 public:
  BackendWorlds(World& world, const CommConfig& config, int cuda_device = 0);
  Communicator& for_traffic(Traffic traffic, DeviceType device);
  Communicator& backend(CommBackend backend);

 private:
  World& world_;
  CommConfig config_;
  int cuda_device_;
  std::map<CommBackend, std::unique_ptr<Communicator>> opened_;
};

}  // namespace tandem::comm
