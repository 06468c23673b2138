// Which ranks share a node (node identities exchanged, see bootstrap.h, or a ranks-per-node
// override to simulate nodes on one machine), and the groups hierarchical communication uses: the
// ranks of one node (the NVLink domain) and the ranks with the same local index across nodes (one
// InfiniBand rail).
#pragma once

#include <memory>
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
std::unique_ptr<Communicator> rail_group(Communicator& group, const Topology& topology);

}  // namespace tandem::comm
