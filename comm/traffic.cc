// Backend resolution per traffic class and lazily opened backend worlds.
#include "comm/traffic.h"

#include "comm/mpi/mpi_communicator.h"
#include "comm/ucx/ucx_communicator.h"
#ifdef TANDEM_HAVE_CUDA
#include "comm/nccl/nccl_communicator.h"
#endif

namespace tandem::comm {

const char* traffic_name(Traffic traffic) {
  switch (traffic) {
    case Traffic::kPipeline:
      return "pipeline";
    case Traffic::kExpert:
      return "expert";
    default:
      return "data";
  }
}

CommBackend backend_for(Traffic traffic, const CommConfig& config, DeviceType device,
                        bool mpi_available) {
  const CommBackend configured = traffic == Traffic::kPipeline ? config.pipeline
                                 : traffic == Traffic::kExpert ? config.expert
                                                               : config.data;
  if (configured != CommBackend::kAuto) {
    TANDEM_USER_CHECK(configured != CommBackend::kNccl || device == DeviceType::kCUDA, "comm.",
                      traffic_name(traffic),
                      " = \"nccl\" needs CUDA tensors; on the CPU use mpi or ucx");
    // The host backends would read a device pointer as host memory.
    TANDEM_USER_CHECK(configured == CommBackend::kNccl || device == DeviceType::kCPU, "comm.",
                      traffic_name(traffic), " = \"", choice_name(configured),
                      "\" carries host memory, but train.device = \"cuda\" keeps its tensors on "
                      "the GPU; set comm.",
                      traffic_name(traffic), " = \"nccl\" or \"auto\"");
    return configured;
  }
  if (device == DeviceType::kCUDA) return CommBackend::kNccl;
  // UCX's endpoints run in its peer-failure mode, which leaves out its shared-memory transports:
  // on one node MPI (shared memory, single copy) carries the pipeline faster.
  return mpi_available ? CommBackend::kMpi : CommBackend::kUcx;
}

BackendWorlds::BackendWorlds(World& world, const CommConfig& config, int cuda_device)
    : world_(world), config_(config), cuda_device_(cuda_device) {}

Communicator& BackendWorlds::for_traffic(Traffic traffic, DeviceType device) {
  const bool mpi = dynamic_cast<MpiCommunicator*>(world_.comm.get()) != nullptr;
  return backend(backend_for(traffic, config_, device, mpi));
}

Communicator& BackendWorlds::backend(CommBackend name) {
  if (auto it = opened_.find(name); it != opened_.end()) return *it->second;
  const int timeout_ms = comm_timeout_ms(config_);
  std::unique_ptr<Communicator> comm;
  Communicator& joined = *world_.comm;
  const bool joined_is_mpi = dynamic_cast<MpiCommunicator*>(&joined) != nullptr;
  if (name == CommBackend::kMpi) {
    TANDEM_USER_CHECK(joined_is_mpi,
                      "the mpi backend needs a job started by mpirun; this one "
                      "was started the ",
                      launcher_name(world_.launch.launcher), " way (set comm.* to ucx)");
    return joined;
  } else if (name == CommBackend::kUcx) {
    if (!joined_is_mpi) return joined;  // the joined world already is UCX
    // Under MPI, UCX worker addresses travel through an all-gather on the MPI world.
    auto ucx = UcxCommunicator::over(joined);
    ucx->set_node_collectives(config_.node_collectives);
    comm = std::move(ucx);
  } else if (name == CommBackend::kNccl) {
#ifdef TANDEM_HAVE_CUDA
    comm = NcclCommunicator::create(joined, cuda_device_, timeout_ms);
#else
    TANDEM_USER_CHECK(false, "the nccl backend needs a CUDA build of tandem");
#endif
  } else {
    TANDEM_CHECK(false, "backend \"", choice_name(name), "\" is resolved before a group is opened");
  }
  Communicator& ref = *comm;
  opened_[name] = std::move(comm);
  return ref;
}

}  // namespace tandem::comm
