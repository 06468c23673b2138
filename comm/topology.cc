// Node discovery by node identity and the node/rail sub-groups.
#include "comm/topology.h"

#include <algorithm>
#include <map>
#include <string>

#include "comm/bootstrap.h"
#include "runtime/core/device.h"

namespace tandem::comm {

Topology discover_topology(Communicator& group, int ranks_per_node) {
  Topology t;
  const int size = group.size();
  t.node_of_rank.resize(size);
  if (ranks_per_node > 0) {
    TANDEM_USER_CHECK(size % ranks_per_node == 0, "ranks per node = ", ranks_per_node,
                      " does not divide the ", size, " ranks");
    for (int r = 0; r < size; ++r) t.node_of_rank[r] = r / ranks_per_node;
  } else {
    Tensor mine = Tensor::empty({1}, DType::kI64);
    mine.data<int64_t>()[0] = node_identity_hash();
    Tensor all = Tensor::empty({size}, DType::kI64);
    group.all_gather(mine, all).wait();
    std::map<int64_t, int> node_ids;  // numbered in order of first appearance
    for (int r = 0; r < size; ++r) {
      const auto [it, inserted] =
          node_ids.emplace(all.data<int64_t>()[r], static_cast<int>(node_ids.size()));
      t.node_of_rank[r] = it->second;
    }
  }
  t.node = t.node_of_rank[group.rank()];
  t.nodes = 1 + *std::max_element(t.node_of_rank.begin(), t.node_of_rank.end());
  t.local_size = 0;
  for (int r = 0; r < size; ++r) {
    if (t.node_of_rank[r] != t.node) continue;
    if (r < group.rank()) ++t.local_rank;
    ++t.local_size;
  }
  return t;
}

int local_cuda_device(const Topology& topology) {
  const int devices = cuda_device_count();
  return devices > 0 ? topology.local_rank % devices : 0;
}

std::optional<std::pair<int, int>> ranks_sharing_a_gpu(const std::vector<int64_t>& gpu_identity) {
  std::map<int64_t, int> first_rank;
  for (int r = 0; r < static_cast<int>(gpu_identity.size()); ++r) {
    const auto [it, inserted] = first_rank.emplace(gpu_identity[r], r);
    if (!inserted) return std::pair{it->second, r};
  }
  return std::nullopt;
}

std::unique_ptr<Communicator> node_group(Communicator& group, const Topology& topology) {
  return group.split(topology.node, group.rank());
}

std::unique_ptr<Communicator> rail_group(Communicator& group, const Topology& topology) {
  return group.split(topology.local_rank, group.rank());
}

}  // namespace tandem::comm
