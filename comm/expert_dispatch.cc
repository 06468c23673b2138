// Dispatch/combine: count exchange, payload all-to-all, and the reorder between the order rows
// arrive in (by source rank, then local expert) and the order experts consume (by local expert,
// then source rank).
#include "comm/expert_dispatch.h"

#include <cstring>

namespace tandem::comm {

namespace {

// Copies row blocks: block i of `src` (rows [src_off[i], +len[i])) to `dst` at dst_off[i].
void move_blocks(const Tensor& src, Tensor& dst, const std::vector<int64_t>& src_off,
                 const std::vector<int64_t>& dst_off, const std::vector<int64_t>& len) {
  if (src.ndim() == 0 || src.dim(0) == 0) return;
  const size_t row = src.nbytes() / static_cast<size_t>(src.dim(0));
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(dst.raw_data());
  for (size_t i = 0; i < len.size(); ++i)
    if (len[i]) std::memcpy(d + dst_off[i] * row, s + src_off[i] * row, len[i] * row);
}

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
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  DispatchLayout layout;
  layout.tokens = expert_ids.dim(0);
  layout.plan = kernels::make_permute_plan(expert_ids, n_experts_);
  // Counts for each peer's local experts travel as one int64 row per peer.
  Tensor send_counts = Tensor::empty({peers, local}, DType::kI64);
  Tensor recv_counts = Tensor::empty({peers, local}, DType::kI64);
  layout.send_rows.assign(peers, 0);
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e) {
      const int64_t rows = layout.plan.rows_for_expert(p * local + e);
      send_counts.data<int64_t>()[p * local + e] = rows;
      layout.send_rows[p] += rows;
    }
  const std::vector<int64_t> ones(peers, 1);
  group_.all_to_all_v(send_counts, ones, recv_counts, ones).wait();
  layout.recv_by_expert.assign(recv_counts.data<int64_t>(),
                               recv_counts.data<int64_t>() + peers * local);
  layout.recv_rows.assign(peers, 0);
  layout.expert_offsets.assign(local + 1, 0);
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e) {
      layout.recv_rows[p] += layout.recv_by_expert[p * local + e];
      layout.expert_offsets[e + 1] += layout.recv_by_expert[p * local + e];
    }
  for (int64_t e = 0; e < local; ++e) layout.expert_offsets[e + 1] += layout.expert_offsets[e];
  return layout;
}

Tensor ExpertDispatcher::to_experts(const Tensor& slot_rows, const DispatchLayout& layout) {
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  int64_t received = 0;
  for (int64_t r : layout.recv_rows) received += r;
  Tensor arrived = Tensor::empty(with_rows(slot_rows, received), slot_rows.dtype());
  group_.all_to_all_v(slot_rows, layout.send_rows, arrived, layout.recv_rows).wait();
  // Source-major → expert-major.
  std::vector<int64_t> src_off, dst_off, len;
  std::vector<int64_t> next(layout.expert_offsets.begin(), layout.expert_offsets.end() - 1);
  int64_t offset = 0;
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e) {
      const int64_t n = layout.recv_by_expert[p * local + e];
      src_off.push_back(offset);
      dst_off.push_back(next[e]);
      len.push_back(n);
      offset += n;
      next[e] += n;
    }
  Tensor grouped = Tensor::empty(arrived.shape(), arrived.dtype());
  move_blocks(arrived, grouped, src_off, dst_off, len);
  return grouped;
}

Tensor ExpertDispatcher::from_experts(const Tensor& expert_rows, const DispatchLayout& layout) {
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  // Expert-major → source-major, then back to the tokens' ranks.
  std::vector<int64_t> src_off, dst_off, len;
  std::vector<int64_t> next(layout.expert_offsets.begin(), layout.expert_offsets.end() - 1);
  int64_t offset = 0;
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e) {
      const int64_t n = layout.recv_by_expert[p * local + e];
      src_off.push_back(next[e]);
      dst_off.push_back(offset);
      len.push_back(n);
      offset += n;
      next[e] += n;
    }
  Tensor by_source = Tensor::empty(expert_rows.shape(), expert_rows.dtype());
  move_blocks(expert_rows, by_source, src_off, dst_off, len);
  Tensor back =
      Tensor::empty(with_rows(expert_rows, layout.tokens * layout.plan.top_k), expert_rows.dtype());
  group_.all_to_all_v(by_source, layout.recv_rows, back, layout.send_rows).wait();
  return back;
}

Tensor ExpertDispatcher::dispatch(const Tensor& x, const DispatchLayout& layout) {
  Tensor slot_rows = Tensor::empty({layout.tokens * layout.plan.top_k, x.dim(1)}, x.dtype());
  kernels::permute_rows(x, layout.plan, slot_rows);
  return to_experts(slot_rows, layout);
}

Tensor ExpertDispatcher::combine(const Tensor& expert_out, const Tensor& gate_weights,
                                 const DispatchLayout& layout, Tensor* slot_rows) {
  Tensor back = from_experts(expert_out, layout);
  Tensor y = Tensor::empty({layout.tokens, expert_out.dim(1)}, expert_out.dtype());
  kernels::unpermute_weighted(back, gate_weights, layout.plan, y);
  if (slot_rows) *slot_rows = back;
  return y;
}

}  // namespace tandem::comm
