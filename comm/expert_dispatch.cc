// Dispatch/combine: the count exchange, then payload blocks placed directly where the other side
// wants them (expert-major on the experts' ranks, slot order on the tokens' ranks).
#include "comm/expert_dispatch.h"

#include <cstring>

#include "kernels/elementwise.h"

namespace tandem::comm {

namespace {

Shape with_rows(const Tensor& like, int64_t rows) {
  Shape shape = like.shape();
  shape[0] = rows;
  return shape;
}

}  // namespace

ExpertDispatcher::ExpertDispatcher(Communicator& expert_group, int64_t n_experts)
    : group_(expert_group), n_experts_(n_experts) {
  TANDEM_USER_CHECK(n_experts % expert_group.size() == 0, "model.n_routed_experts = ", n_experts,
                    " is not divisible by the expert-parallel group size ", expert_group.size());
  experts_per_rank_ = n_experts / expert_group.size();
}

DispatchLayout ExpertDispatcher::plan(const Tensor& expert_ids) {
  PendingPlan pending = start_plan(expert_ids);
  return finish_plan(pending);
}

PendingPlan ExpertDispatcher::start_plan(const Tensor& expert_ids) {
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  PendingPlan pending;
  DispatchLayout& layout = pending.layout;
  layout.tokens = expert_ids.dim(0);
  layout.plan = kernels::make_permute_plan(expert_ids, n_experts_);
  // Counts for each peer's local experts travel as one int64 row per peer.
  pending.send_counts = Tensor::empty({peers, local}, DType::kI64);
  pending.recv_counts = Tensor::empty({peers, local}, DType::kI64);
  for (int64_t e = 0; e < peers * local; ++e)
    pending.send_counts.data<int64_t>()[e] = layout.plan.rows_for_expert(e);
  const std::vector<int64_t> ones(peers, 1);
  pending.handle = group_.all_to_all_v(pending.send_counts, ones, pending.recv_counts, ones);
  return pending;
}

DispatchLayout ExpertDispatcher::finish_plan(PendingPlan& pending) {
  pending.handle.wait();
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  DispatchLayout layout = std::move(pending.layout);
  const int64_t* recv = pending.recv_counts.data<int64_t>();
  layout.recv_by_expert.assign(recv, recv + peers * local);
  layout.expert_offsets.assign(local + 1, 0);
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e)
      layout.expert_offsets[e + 1] += layout.recv_by_expert[p * local + e];
  for (int64_t e = 0; e < local; ++e) layout.expert_offsets[e + 1] += layout.expert_offsets[e];
  return layout;
}

// Blocks of the movement between the tokens' ranks (rows grouped by global expert, as the plan
// orders them) and the experts' ranks (rows grouped by local expert, then by source rank). Listing
// them per (peer, local expert) on both sides lets exchange_rows place every block directly.
void ExpertDispatcher::blocks(const DispatchLayout& layout, std::vector<RowBlock>& token_side,
                              std::vector<RowBlock>& expert_side) const {
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  std::vector<int64_t> next(layout.expert_offsets.begin(), layout.expert_offsets.end() - 1);
  token_side.clear();
  expert_side.clear();
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e) {
      const int64_t global = p * local + e;
      token_side.push_back(
          {p, layout.plan.expert_offsets[global], layout.plan.rows_for_expert(global)});
      const int64_t rows = layout.recv_by_expert[p * local + e];
      expert_side.push_back({p, next[e], rows});
      next[e] += rows;
    }
}

Tensor ExpertDispatcher::to_experts(const Tensor& slot_rows, const DispatchLayout& layout) {
  return start_to_experts(slot_rows, layout).wait();
}

Tensor ExpertDispatcher::from_experts(const Tensor& expert_rows, const DispatchLayout& layout) {
  return start_from_experts(expert_rows, layout).wait();
}

PendingRows ExpertDispatcher::start_to_experts(const Tensor& slot_rows,
                                               const DispatchLayout& layout) {
  std::vector<RowBlock> token_side, expert_side;
  blocks(layout, token_side, expert_side);
  return start_exchange(slot_rows, layout.expert_offsets.back(), token_side, expert_side);
}

PendingRows ExpertDispatcher::start_from_experts(const Tensor& expert_rows,
                                                 const DispatchLayout& layout) {
  std::vector<RowBlock> token_side, expert_side;
  blocks(layout, token_side, expert_side);
  return start_exchange(expert_rows, layout.tokens * layout.plan.top_k, expert_side, token_side);
}

PendingRows ExpertDispatcher::start_exchange(const Tensor& source, int64_t rows,
                                             const std::vector<RowBlock>& sends,
                                             const std::vector<RowBlock>& recvs) {
  PendingRows pending;
  pending.source = source;
  pending.rows = Tensor::empty(with_rows(source, rows), source.dtype());
  int64_t rows_to_peers = 0;
  for (const RowBlock& b : sends)
    if (b.peer != group_.rank()) rows_to_peers += b.rows;
  pending.bytes_to_peers = rows_to_peers * static_cast<int64_t>(row_bytes(source));
  pending.handle = group_.exchange_rows(source, sends, pending.rows, recvs);
  return pending;
}

Tensor ExpertDispatcher::dispatch(const Tensor& x, const DispatchLayout& layout) {
  Tensor slot_rows = Tensor::empty({layout.tokens * layout.plan.top_k, x.dim(1)}, x.dtype());
  kernels::permute_rows(x, layout.plan, slot_rows);
  return to_experts(slot_rows, layout);
}

Tensor ExpertDispatcher::combine(const Tensor& expert_out, const Tensor& gate_weights,
                                 const DispatchLayout& layout, Tensor* slot_rows) {
  Tensor back = from_experts(expert_out, layout);
  if (back.dtype() == DType::kBF16) {  // bf16 on the wire (half the bytes), summed in fp32
    Tensor wide = Tensor::empty(back.shape(), DType::kF32);
    kernels::convert(back, wide);
    back = wide;
  }
  Tensor y = Tensor::empty({layout.tokens, expert_out.dim(1)}, back.dtype());
  kernels::unpermute_weighted(back, gate_weights, layout.plan, y);
  if (slot_rows) *slot_rows = back;
  return y;
}

}  // namespace tandem::comm
