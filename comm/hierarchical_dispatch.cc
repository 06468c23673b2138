// Two-level dispatch: rail all-to-all across nodes, then a flat dispatch inside the node.
#include "comm/hierarchical_dispatch.h"

#include <bit>
#include <cstring>

namespace tandem::comm {

HierarchicalDispatcher::HierarchicalDispatcher(Communicator& expert_group, const Topology& topology,
                                               int64_t n_experts, ExpertExchange in_node_rows,
                                               int timeout_ms)
    : group_(expert_group), topology_(topology), n_experts_(n_experts) {
  const int size = expert_group.size();
  TANDEM_USER_CHECK(n_experts % size == 0, "model.n_routed_experts = ", n_experts,
                    " is not divisible by the expert-parallel group size ", size);
  for (int r = 0; r < size; ++r)
    TANDEM_USER_CHECK(topology.node_of_rank[r] == r / topology.local_size,
                      "hierarchical dispatch needs the ranks of a node to be consecutive");
  experts_per_rank_ = n_experts / size;
  experts_per_node_ = experts_per_rank_ * topology.local_size;
  rail_ = rail_group(group_, topology_);  // rank in the rail = node index
  node_ = node_group(group_, topology_);  // rank in the node = local index
  fan_out_ = std::make_unique<ExpertDispatcher>(
      *node_, experts_per_node_,
      shared_memory_for_rows(*node_, in_node_rows, 0, timeout_ms, &why_messages_));
}

HierarchicalLayout HierarchicalDispatcher::plan(const Tensor& expert_ids,
                                                const Tensor& gate_weights) {
  const int64_t tokens = expert_ids.dim(0), k = expert_ids.dim(1);
  const int nodes = topology_.nodes;
  const int32_t* ids = expert_ids.data<int32_t>();
  const float* gates = gate_weights.data<float>();
  HierarchicalLayout layout;
  layout.tokens = tokens;
  // Trips ordered by destination node; each carries the token's slots that live on that node.
  layout.rail_send.assign(nodes, 0);
  std::vector<std::vector<int32_t>> meta_by_node(nodes);
  for (int n = 0; n < nodes; ++n)
    for (int64_t t = 0; t < tokens; ++t) {
      bool visits = false;
      for (int64_t j = 0; j < k; ++j) visits |= ids[t * k + j] / experts_per_node_ == n;
      if (!visits) continue;
      layout.trip_token.push_back(t);
      ++layout.rail_send[n];
      for (int64_t j = 0; j < k; ++j) {
        const bool here = ids[t * k + j] / experts_per_node_ == n;
        meta_by_node[n].push_back(here ? static_cast<int32_t>(ids[t * k + j] % experts_per_node_)
                                       : -1);
      }
      for (int64_t j = 0; j < k; ++j)
        meta_by_node[n].push_back(std::bit_cast<int32_t>(gates[t * k + j]));
    }
  Tensor meta = Tensor::empty({static_cast<int64_t>(layout.trip_token.size()), 2 * k}, DType::kI32);
  int64_t offset = 0;
  for (int n = 0; n < nodes; ++n) {
    std::memcpy(meta.data<int32_t>() + offset, meta_by_node[n].data(), meta_by_node[n].size() * 4);
    offset += static_cast<int64_t>(meta_by_node[n].size());
  }
  // Trip counts, then the metadata, across the rail.
  Tensor send_counts = Tensor::empty({nodes, 1}, DType::kI64), recv_counts = send_counts.clone();
  for (int n = 0; n < nodes; ++n) send_counts.data<int64_t>()[n] = layout.rail_send[n];
  const std::vector<int64_t> ones(nodes, 1);
  rail_->all_to_all_v(send_counts, ones, recv_counts, ones).wait();
  layout.rail_recv.assign(recv_counts.data<int64_t>(), recv_counts.data<int64_t>() + nodes);
  int64_t received = 0;
  for (int64_t r : layout.rail_recv) received += r;
  layout.trip_meta = Tensor::empty({received, 2 * k}, DType::kI32);
  rail_->all_to_all_v(meta, layout.rail_send, layout.trip_meta, layout.rail_recv).wait();
  // One copy per (received trip, slot on this node), then the fan-out plan inside the node.
  const int32_t* m = layout.trip_meta.data<int32_t>();
  std::vector<int32_t> experts;
  for (int64_t r = 0; r < received; ++r)
    for (int64_t j = 0; j < k; ++j) {
      if (m[r * 2 * k + j] < 0) continue;
      layout.copy_trip.push_back(r);
      layout.copy_slot.push_back(static_cast<int32_t>(j));
      layout.copy_weight.push_back(std::bit_cast<float>(m[r * 2 * k + k + j]));
      experts.push_back(m[r * 2 * k + j]);
    }
  layout.copy_expert = Tensor::empty({static_cast<int64_t>(experts.size()), 1}, DType::kI32);
  if (!experts.empty())
    std::memcpy(layout.copy_expert.data<int32_t>(), experts.data(), experts.size() * 4);
  layout.node = fan_out_->plan(layout.copy_expert);
  return layout;
}

// Token rows → the forwarding ranks, one row per trip.
Tensor HierarchicalDispatcher::trips_out(const Tensor& rows, const HierarchicalLayout& layout) {
  const int64_t d = rows.dim(1), trips = static_cast<int64_t>(layout.trip_token.size());
  Tensor out = Tensor::empty({trips, d}, rows.dtype());
  kernels::gather_rows(rows, layout.trip_token, out);
  Tensor arrived = Tensor::empty({layout.trip_meta.dim(0), d}, rows.dtype());
  rail_->all_to_all_v(out, layout.rail_send, arrived, layout.rail_recv).wait();
  return arrived;
}

// One row per received trip → back to the token's rank, summed over the token's nodes.
Tensor HierarchicalDispatcher::trips_back(const Tensor& partial, const HierarchicalLayout& layout) {
  const int64_t d = partial.dim(1);
  Tensor returned = Tensor::empty({static_cast<int64_t>(layout.trip_token.size()), d}, DType::kF32);
  rail_->all_to_all_v(partial, layout.rail_recv, returned, layout.rail_send).wait();
  Tensor y = Tensor::zeros({layout.tokens, d}, DType::kF32);
  for (size_t i = 0; i < layout.trip_token.size(); ++i) {
    float* dst = y.data<float>() + layout.trip_token[i] * d;
    const float* src = returned.data<float>() + static_cast<int64_t>(i) * d;
    for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
  }
  return y;
}

// Expert rows → the forwarding rank, summed per trip (gate-weighted or not).
Tensor HierarchicalDispatcher::sum_copies(const Tensor& expert_out,
                                          const HierarchicalLayout& layout, bool weighted,
                                          Tensor* copy_out) {
  check_dtype(expert_out, DType::kF32, "hierarchical combine payload");
  const int64_t d = expert_out.dim(1);
  // Back in the fan-out plan's order: copy c is row row_of_slot[c].
  const Tensor back = fan_out_->from_experts(expert_out, layout.node);
  const std::vector<int64_t>& row_of_copy = layout.node.plan.row_of_slot;
  Tensor partial = Tensor::zeros({layout.trip_meta.dim(0), d}, DType::kF32);
  for (size_t c = 0; c < layout.copy_trip.size(); ++c) {
    float* dst = partial.data<float>() + layout.copy_trip[c] * d;
    const float* src = back.data<float>() + row_of_copy[c] * d;
    const float w = weighted ? layout.copy_weight[c] : 1.0f;
    for (int64_t i = 0; i < d; ++i) dst[i] += w * src[i];
  }
  if (copy_out) *copy_out = back;
  return partial;
}

Tensor HierarchicalDispatcher::dispatch(const Tensor& x, const HierarchicalLayout& layout) {
  rows_across_nodes_ = 0;
  for (int n = 0; n < topology_.nodes; ++n)
    if (n != topology_.node) rows_across_nodes_ += layout.rail_send[n];
  const Tensor arrived = trips_out(x, layout);
  const int64_t d = x.dim(1), copies = static_cast<int64_t>(layout.copy_trip.size());
  Tensor copy_rows = Tensor::empty({copies, d}, x.dtype());
  kernels::gather_rows(arrived, layout.copy_trip, copy_rows);
  return fan_out_->dispatch(copy_rows, layout.node);
}

Tensor HierarchicalDispatcher::combine(const Tensor& expert_out, const HierarchicalLayout& layout,
                                       Tensor* copy_out) {
  return trips_back(sum_copies(expert_out, layout, true, copy_out), layout);
}

Tensor HierarchicalDispatcher::dispatch_backward(const Tensor& d_rows,
                                                 const HierarchicalLayout& layout) {
  return trips_back(sum_copies(d_rows, layout, false, nullptr), layout);
}

Tensor HierarchicalDispatcher::combine_backward(const Tensor& dy, const Tensor& copy_out,
                                                const HierarchicalLayout& layout, Tensor& d_gates) {
  check_dtype(dy, DType::kF32, "hierarchical combine gradient");
  const int64_t d = dy.dim(1), k = layout.trip_meta.dim(1) / 2;
  const int64_t copies = static_cast<int64_t>(layout.copy_trip.size());
  const Tensor dy_trip = trips_out(dy, layout);
  // On the forwarding rank: each copy's output gradient is w·dy, its gate gradient dy·out.
  Tensor copy_grads = Tensor::empty({copies, d}, DType::kF32);
  Tensor trip_gates = Tensor::zeros({layout.trip_meta.dim(0), k}, DType::kF32);
  const std::vector<int64_t>& row_of_copy = layout.node.plan.row_of_slot;
  for (int64_t c = 0; c < copies; ++c) {
    const float* g = dy_trip.data<float>() + layout.copy_trip[c] * d;
    const float* out = copy_out.data<float>() + row_of_copy[c] * d;
    float* dst = copy_grads.data<float>() + c * d;
    float dot = 0;
    for (int64_t i = 0; i < d; ++i) {
      dst[i] = layout.copy_weight[c] * g[i];
      dot += g[i] * out[i];
    }
    trip_gates.data<float>()[layout.copy_trip[c] * k + layout.copy_slot[c]] = dot;
  }
  // Gate gradients go home with the trips; each slot lives on one node, so the sum assembles it.
  d_gates = trips_back(trip_gates, layout);
  return fan_out_->dispatch(copy_grads, layout.node);
}

}  // namespace tandem::comm
