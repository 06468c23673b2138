// Node discovery by hostname and the node/rail sub-groups.
#include "comm/topology.h"

#include <unistd.h>

#include "runtime/core/device.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

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
    constexpr int kHostBytes = 256;
    Tensor mine = Tensor::zeros({kHostBytes}, DType::kU8);
    gethostname(reinterpret_cast<char*>(mine.data<uint8_t>()), kHostBytes - 1);
    Tensor all = Tensor::empty({static_cast<int64_t>(size) * kHostBytes}, DType::kU8);
    group.all_gather(mine, all).wait();
    std::map<std::string, int> node_ids;  // numbered in order of first appearance
    for (int r = 0; r < size; ++r) {
      const std::string host(reinterpret_cast<const char*>(all.data<uint8_t>()) + r * kHostBytes);
      const auto [it, inserted] = node_ids.emplace(host, static_cast<int>(node_ids.size()));
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

std::unique_ptr<Communicator> node_group(Communicator& group, const Topology& topology) {
  return group.split(topology.node, group.rank());
}

std::unique_ptr<Communicator> rail_group(Communicator& group, const Topology& topology) {
  return group.split(topology.local_rank, group.rank());
}

}  // namespace tandem::comm
