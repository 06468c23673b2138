// Expert dispatch + combine between real nodes (the namespace cluster, scripts/netns-cluster),
// flat against hierarchical, counted on the wire: each node's first rank reads its interface's
// byte counters around the exchanges, and the sum over nodes is set against what the algorithm
// must send across — the flat dispatch one row per (token, expert on another node), the
// hierarchical one a row per (token, other node it uses), and the same back for the combine.
// Started the torchrun way on every node (tandem-launch --nnodes N), one expert group over all
// ranks, uniform top-k routing from a fixed seed:
//   cluster_dispatch [tokens per rank, default 2048] [d_model, 512] [top_k, 4] [experts, 16]
//                    [interface, eth0] [iterations, 4]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "comm/expert_dispatch.h"
#include "comm/hierarchical_dispatch.h"
#include "comm/topology.h"
#include "comm/world.h"
#include "runtime/core/random.h"

namespace {

using namespace tandem;
using namespace tandem::comm;

// Bytes this node's interface has sent. /proc/self/net/dev is the counters of this process's
// network namespace (/sys/class/net would show the host's unless sysfs was remounted).
double sent_bytes(const std::string& interface) {
  std::ifstream in("/proc/self/net/dev");
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name != interface) continue;
    std::istringstream fields(line.substr(colon + 1));
    double value = 0;
    for (int i = 0; i < 9; ++i) fields >> value;  // rx: 8 fields, then tx bytes
    return value;
  }
  return -1;
}

struct Measure {
  double wire_bytes = 0;  // per iteration, every node's sends summed
  double seconds = 0;     // best iteration
};

// Runs `exchange` `iterations` times between barriers; the node leaders' counters give the bytes.
template <class Exchange>
Measure measure(Communicator& world, bool leader, const std::string& interface, int iterations,
                Exchange exchange) {
  exchange();  // warm-up: connections, buffers
  world.barrier().wait();
  const double before = leader ? sent_bytes(interface) : 0;
  world.barrier().wait();
  Measure m;
  m.seconds = 1e30;
  for (int i = 0; i < iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    exchange();
    world.barrier().wait();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m.seconds = std::min(m.seconds, all_reduce_value(world, s, ReduceOp::kMax));
  }
  world.barrier().wait();
  const double mine = leader ? sent_bytes(interface) - before : 0;
  m.wire_bytes = all_reduce_value(world, mine) / iterations;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t tokens = argc > 1 ? std::atoll(argv[1]) : 2048;
  const int64_t d = argc > 2 ? std::atoll(argv[2]) : 512;
  const int64_t k = argc > 3 ? std::atoll(argv[3]) : 4;
  const int64_t experts = argc > 4 ? std::atoll(argv[4]) : 16;
  const std::string interface = argc > 5 ? argv[5] : "eth0";
  const int iterations = argc > 6 ? std::atoi(argv[6]) : 4;
  try {
    WorldOptions options;
    options.backend = CommBackend::kUcx;
    options.timeout_ms = 120000;
    World w = join_world(options);
    Communicator& world = *w.comm;
    const int rank = world.rank();
    const Topology topology = discover_topology(world);
    const bool leader = topology.local_rank == 0;
    TANDEM_USER_CHECK(topology.nodes >= 2,
                      "cluster_dispatch needs ranks on 2 or more nodes, found ", topology.nodes,
                      " (run it in the namespace cluster)");
    TANDEM_USER_CHECK(!leader || sent_bytes(interface) >= 0, "no interface '", interface,
                      "' on this node; give its name");
    const int64_t per_rank = experts / world.size();
    TANDEM_USER_CHECK(per_rank * world.size() == experts && k <= experts, "experts (", experts,
                      ") must split evenly over ", world.size(), " ranks and be >= top_k");

    // Routing: k distinct experts per token, uniformly, from (seed, rank, token).
    Tensor x = Tensor::empty({tokens, d}, DType::kF32);
    for (int64_t i = 0; i < tokens * d; ++i)
      x.data<float>()[i] = static_cast<float>(random_uniform(7, rank, i));
    Tensor ids = Tensor::empty({tokens, k}, DType::kI32);
    Tensor gates = Tensor::empty({tokens, k}, DType::kF32);
    int64_t flat_rows = 0, hier_rows = 0;  // crossing nodes, this rank's tokens, one direction
    for (int64_t t = 0; t < tokens; ++t) {
      std::set<int64_t> chosen;
      for (uint64_t draw = 0; static_cast<int64_t>(chosen.size()) < k; ++draw)
        chosen.insert(static_cast<int64_t>(random_bits(11, rank, t * 64 + draw) % experts));
      std::set<int> other_nodes;
      int64_t j = 0;
      for (int64_t e : chosen) {
        ids.data<int32_t>()[t * k + j] = static_cast<int32_t>(e);
        gates.data<float>()[t * k + j] = 1.0f / static_cast<float>(k);
        ++j;
        const int node = topology.node_of_rank[e / per_rank];
        if (node != topology.node) {
          ++flat_rows;
          other_nodes.insert(node);
        }
      }
      hier_rows += static_cast<int64_t>(other_nodes.size());
    }
    const double row_bytes = static_cast<double>(d) * 4;
    // Dispatch and combine each move these rows across, so twice over.
    const double flat_theory = 2 * row_bytes * all_reduce_value(world, flat_rows);
    const double hier_theory = 2 * row_bytes * all_reduce_value(world, hier_rows);

    ExpertDispatcher flat(world, experts);
    const Measure f = measure(world, leader, interface, iterations, [&] {
      const DispatchLayout layout = flat.plan(ids);
      const Tensor rows = flat.dispatch(x, layout);
      static_cast<void>(flat.combine(rows, gates, layout));
    });
    HierarchicalDispatcher hierarchical(world, topology, experts, ExpertExchange::kAuto, 120000);
    const Measure h = measure(world, leader, interface, iterations, [&] {
      const HierarchicalLayout layout = hierarchical.plan(ids, gates);
      const Tensor rows = hierarchical.dispatch(x, layout);
      static_cast<void>(hierarchical.combine(rows, layout));
    });
    if (rank == 0) {
      std::printf(
          "cluster_dispatch: %d ranks on %d nodes, %lld tokens per rank, d %lld, top-%lld of %lld "
          "experts, fp32 rows; bytes summed over every node's %s per dispatch + combine\n",
          world.size(), topology.nodes, static_cast<long long>(tokens), static_cast<long long>(d),
          static_cast<long long>(k), static_cast<long long>(experts), interface.c_str());
      std::printf(
          "flat:         %8.2f MB on the wire, %8.2f MB the algorithm must cross (%.3f x), "
          "%.1f ms, %.0f MB/s across\n",
          f.wire_bytes / 1e6, flat_theory / 1e6, f.wire_bytes / flat_theory, f.seconds * 1e3,
          f.wire_bytes / f.seconds / 1e6);
      std::printf(
          "hierarchical: %8.2f MB on the wire, %8.2f MB the algorithm must cross (%.3f x), "
          "%.1f ms, %.0f MB/s across\n",
          h.wire_bytes / 1e6, hier_theory / 1e6, h.wire_bytes / hier_theory, h.seconds * 1e3,
          h.wire_bytes / h.seconds / 1e6);
      std::printf(
          "flat / hierarchical: %.2f x the bytes (the algorithms' counts: %.2f x), %.2f x "
          "the time\n",
          f.wire_bytes / h.wire_bytes, flat_theory / hier_theory, f.seconds / h.seconds);
    }
    world.barrier().wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cluster_dispatch: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
