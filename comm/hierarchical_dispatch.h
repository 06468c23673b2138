// Hierarchical expert dispatch (DeepSeek-V3's cross-node pattern): a token crosses to each
// destination node once — to the rank with the same local index there, over the rail group — and
// that rank fans the copies out inside its node to the ranks holding the experts. Combine runs the
// other way: expert outputs return inside the node, are summed with their gate weights there, and
// one partial sum per (token, node) crosses back. Nodes come from a Topology (real or simulated);
// ranks of a node must be consecutive, and experts are placed contiguously as in ExpertDispatcher.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/expert_dispatch.h"
#include "comm/topology.h"

namespace tandem::comm {

struct HierarchicalLayout {
  int64_t tokens = 0;
  // On the token's rank: one trip per (token, destination node), ordered by node.
  std::vector<int64_t> trip_token;
  std::vector<int64_t> rail_send, rail_recv;  // trips per rail peer (= node)
  // On the forwarding rank: the trips received, and one copy per (trip, slot on this node).
  Tensor trip_meta;  // int32 [trips received, 2k]: expert ids (−1: elsewhere), gate bits
  std::vector<int64_t> copy_trip;  // trip of each copy
  std::vector<int32_t> copy_slot;  // slot j (of the token's k) of each copy
  std::vector<float> copy_weight;  // gate weight of each copy
  Tensor copy_expert;              // int32 [copies, 1]: expert index within the node
  DispatchLayout node;             // the fan-out inside the node
};

class HierarchicalDispatcher {
 public:
  // `in_node_rows` is comm.expert_exchange for the fan-out inside a node ("auto": in shared
  // memory where the node's ranks can map each other's memory). Collective over expert_group.
  HierarchicalDispatcher(Communicator& expert_group, const Topology& topology, int64_t n_experts,
                         ExpertExchange in_node_rows = ExpertExchange::kMessages,
                         int timeout_ms = 300000);
  bool fan_out_in_shared_memory() const { return fan_out_->in_shared_memory(); }
  const std::string& why_fan_out_as_messages() const { return why_messages_; }
  int64_t experts_per_rank() const { return experts_per_rank_; }
  int64_t first_local_expert() const { return experts_per_rank_ * group_.rank(); }

  // Exchanges routing metadata (expert ids and gate weights travel with the trips).
  HierarchicalLayout plan(const Tensor& expert_ids, const Tensor& gate_weights);
  // x [N, d] fp32 → rows for the local experts, expert-major (offsets in layout.node).
  Tensor dispatch(const Tensor& x, const HierarchicalLayout& layout);
  // Expert outputs (expert-major) → y [N, d] = Σ_j gate[t, j] · out(t, j).
  // copy_out (optional) keeps the outputs as they arrived on the forwarding rank, which
  // combine_backward needs.
  Tensor combine(const Tensor& expert_out, const HierarchicalLayout& layout,
                 Tensor* copy_out = nullptr);

  // Backward of dispatch: d(expert rows) → dx [N, d], every copy's gradient summed into its token
  // (a combine with unit weights).
  Tensor dispatch_backward(const Tensor& d_rows, const HierarchicalLayout& layout);
  // Backward of combine: dy [N, d] → d(expert outputs) (expert-major, gate-weighted dy: a dispatch
  // of gradients) and d_gates [N, k] = dy[t] · out(t, j), formed where the outputs are.
  Tensor combine_backward(const Tensor& dy, const Tensor& copy_out,
                          const HierarchicalLayout& layout, Tensor& d_gates);
  // Rows this rank sent across nodes in the last dispatch (for benchmarks and tests).
  int64_t rows_sent_across_nodes() const { return rows_across_nodes_; }

 private:
  Tensor trips_out(const Tensor& rows, const HierarchicalLayout& layout);  // token rows → forwarder
  Tensor trips_back(const Tensor& partial, const HierarchicalLayout& layout);  // → Σ per token
  Tensor sum_copies(const Tensor& expert_out, const HierarchicalLayout& layout, bool weighted,
                    Tensor* copy_out);
  Communicator& group_;
  Topology topology_;
  int64_t n_experts_, experts_per_rank_, experts_per_node_;
  std::unique_ptr<Communicator> rail_, node_;
  std::unique_ptr<ExpertDispatcher> fan_out_;
  std::string why_messages_;
  int64_t rows_across_nodes_ = 0;
};

}  // namespace tandem::comm
