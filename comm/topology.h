// Which ranks share a node (node identities exchanged, see bootstrap.h, or a ranks-per-node
// override to simulate nodes on one machine), and the groups hierarchical communication uses: the
// ranks of one node (the NVLink domain) and the ranks with the same local index across nodes (one
// InfiniBand rail).
#pragma once

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "comm/communicator.h"

namespace tandem::comm {

struct Topology {
  int node = 0;
  int nodes = 1;
  int local_rank = 0;
  int local_size = 1;
  std::vector<int> node_of_rank;  // by rank of the communicator it was discovered on
};

// Collective over `group`. ranks_per_node > 0 overrides the hostnames: node = rank /
// ranks_per_node.
Topology discover_topology(Communicator& group, int ranks_per_node = 0);
std::unique_ptr<Communicator> node_group(Communicator& group, const Topology& topology);
// The CUDA device of this rank: local rank modulo the devices this process sees (0 without any).
int local_cuda_device(const Topology& topology);
// Two ranks that picked the same GPU, from every rank's GPU identity (its UUID's hash, unique
// across machines, so no node number is needed, and none could be trusted: comm.ranks_per_node
// may split one host into simulated nodes): the first repeat in rank order; none when each rank
// has a GPU of its own, as NCCL requires.
std::optional<std::pair<int, int>> ranks_sharing_a_gpu(const std::vector<int64_t>& gpu_identity);
std::unique_ptr<Communicator> rail_group(Communicator& group, const Topology& topology);

}  // namespace tandem::comm
