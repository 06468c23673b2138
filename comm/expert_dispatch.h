// Expert-parallel dispatch and combine over an expert group of ranks. Experts are placed in
// contiguous ranges: rank r of the group holds experts [r·E/ep, (r+1)·E/ep). Dispatch sends every
// (token, slot) copy to the rank holding its expert, arriving grouped by local expert; combine
// brings expert outputs back and sums them with the gate weights. The two are each other's
// backward: the gradient of dispatch is a combine of gradients (without weights) and the gradient
// of combine is a dispatch of gradients. First the row counts are exchanged, then the payloads.
// Payload rows may be of any dtype (fp32, bf16, or packed FP8 rows with their scales).
#pragma once

#include <vector>

#include "comm/communicator.h"
#include "kernels/permute.h"

namespace tandem::comm {

// What a dispatch decided, needed to send rows back the same way.
struct DispatchLayout {
  kernels::PermutePlan plan;            // (token, slot) copies grouped by global expert
  std::vector<int64_t> recv_by_expert;  // [peer][local expert] rows received
  std::vector<int64_t> expert_offsets;  // local experts' row ranges in the expert-major layout
  int64_t tokens = 0;
};

// A started count exchange: finish_plan() waits for it and completes the layout.
struct PendingPlan {
  DispatchLayout layout;
  Tensor send_counts, recv_counts;
  CommHandle handle;
};

// Rows on their way: `rows` is complete once `handle` is waited. `source` keeps the sent tensor
// alive meanwhile; `bytes_to_peers` is what this rank sends to other ranks.
struct PendingRows {
  Tensor rows;
  Tensor source;
  CommHandle handle;
  int64_t bytes_to_peers = 0;
  Tensor wait() {
    handle.wait();
    return rows;
  }
};

class ExpertDispatcher {
 public:
  ExpertDispatcher(Communicator& expert_group, int64_t n_experts);
  int64_t experts_per_rank() const { return experts_per_rank_; }
  int64_t first_local_expert() const { return experts_per_rank_ * group_.rank(); }
  int rank_of_expert(int64_t expert) const { return static_cast<int>(expert / experts_per_rank_); }

  // Exchanges the row counts for these routing decisions (expert_ids int32 [N, k]).
  DispatchLayout plan(const Tensor& expert_ids);
  // The same in two halves, so that other work runs while the counts travel.
  PendingPlan start_plan(const Tensor& expert_ids);
  DispatchLayout finish_plan(PendingPlan& pending);
  // x [N, d] → rows for the local experts, expert-major [expert_offsets.back(), d].
  Tensor dispatch(const Tensor& x, const DispatchLayout& layout);
  // Expert outputs (expert-major) → y [N, d] = Σ_j gate[t, j] · out(t, j) on the tokens' ranks.
  // bf16 outputs travel as bf16 and are summed in fp32 (y is fp32).
  // slot_rows receives the returned rows ([N·k, d], in layout.plan's order: slot (t, j) is row
  // plan.row_of_slot[t·k + j]),
  // which the backward of combine needs.
  Tensor combine(const Tensor& expert_out, const Tensor& gate_weights, const DispatchLayout& layout,
                 Tensor* slot_rows = nullptr);

  // The two movements everything above is made of: rows grouped by global expert on the token's
  // rank ↔ expert-major rows on the expert's rank.
  Tensor to_experts(const Tensor& slot_rows, const DispatchLayout& layout);
  Tensor from_experts(const Tensor& expert_rows, const DispatchLayout& layout);
  // Started versions of the two (the layout is only read during the call).
  PendingRows start_to_experts(const Tensor& slot_rows, const DispatchLayout& layout);
  PendingRows start_from_experts(const Tensor& expert_rows, const DispatchLayout& layout);

 private:
  void blocks(const DispatchLayout& layout, std::vector<RowBlock>& token_side,
              std::vector<RowBlock>& expert_side) const;
  // Starts moving `source`'s blocks `sends` into a new tensor of `rows` rows at `recvs`.
  PendingRows start_exchange(const Tensor& source, int64_t rows, const std::vector<RowBlock>& sends,
                             const std::vector<RowBlock>& recvs);
  Communicator& group_;
  int64_t n_experts_;
  int64_t experts_per_rank_;
};

}  // namespace tandem::comm
