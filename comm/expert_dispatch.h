// Expert-parallel dispatch and combine over an expert group of ranks. Experts are placed in
// contiguous ranges: rank r of the group holds experts [r·E/ep, (r+1)·E/ep). Dispatch sends every
// (token, slot) copy to the rank holding its expert, arriving grouped by local expert; combine
// brings expert outputs back and sums them with the gate weights. The two are each other's
// backward: the gradient of dispatch is a combine of gradients (without weights) and the gradient
// of combine is a dispatch of gradients. First the row counts are exchanged, then the payloads.
// Payload rows may be of any dtype (fp32, bf16, or packed FP8 rows with their scales).
//
// Rows move one of two ways. As messages over the group's communicator (exchange_rows), or, when
// the dispatcher is given the node's shared memory (every rank of the group on one node), in
// place: the receiving rank allocates its rows in shared memory and tells each sender where its
// blocks go; the sender writes them there, gathering straight from the token rows, so dispatch
// needs no permuted copy; combine reads the expert outputs where the expert's rank wrote them and
// forms the weighted sum as it reads. Each byte is then copied once, as in MPI's own single-copy
// all-to-all, and the permutation and the weighted sum cost no extra pass over memory. The places
// are the exchange's one collective; each rank then tells every peer it is done by storing the
// exchange's number in the peer's control block, and an exchange completes when all peers have.
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/shared_memory.h"
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
// alive meanwhile; `bytes_to_peers` is what this rank sends to other ranks. A combine also
// fills `slot_rows` when asked: the returned rows in the plan's order, which its backward needs.
// `finish`, when set, is local work wait() runs once the handle completes (the weighted sum of a
// combine done with messages): it is compute, so it runs outside the handle's polling, which the
// executor books as waiting for the all-to-all.
struct PendingRows {
  Tensor rows;
  Tensor slot_rows;
  Tensor source;
  CommHandle handle;
  int64_t bytes_to_peers = 0;
  std::function<void()> finish;
  Tensor wait() {
    handle.wait();
    if (finish) std::exchange(finish, nullptr)();
    return rows;
  }
};

class ExpertDispatcher {
 public:
  // With `shared` (NodeSharedMemory::open over the same ranks), rows move in shared memory.
  ExpertDispatcher(Communicator& expert_group, int64_t n_experts,
                   std::shared_ptr<NodeSharedMemory> shared = nullptr);
  bool in_shared_memory() const { return shared_ != nullptr; }
  // A tensor for rows this rank will send back to the tokens' ranks (expert outputs): in shared
  // memory when the dispatcher uses it, so combine reads them where they are.
  Tensor expert_output(Shape shape, DType dtype);
  int64_t experts_per_rank() const { return experts_per_rank_; }
  int64_t first_local_expert() const { return experts_per_rank_ * group_.rank(); }
  int rank_of_expert(int64_t expert) const { return static_cast<int>(expert / experts_per_rank_); }

  // Exchanges the row counts for these routing decisions (expert_ids int32 [N, k]).
  DispatchLayout plan(const Tensor& expert_ids);
  // The same in two halves, so that other work runs while the counts travel.
  PendingPlan start_plan(const Tensor& expert_ids);
  DispatchLayout finish_plan(PendingPlan& pending);
  // x [N, d] (token rows, any dtype) → rows for the local experts, expert-major
  // [expert_offsets.back(), d]: each token once per expert it is routed to.
  Tensor dispatch(const Tensor& x, const DispatchLayout& layout);
  PendingRows start_dispatch(const Tensor& x, const DispatchLayout& layout);
  // Expert outputs (expert-major) → y [N, d] = Σ_j gate[t, j] · out(t, j) on the tokens' ranks.
  // bf16 outputs travel as bf16 and are summed in fp32 (y is fp32).
  // slot_rows receives the returned rows ([N·k, d], in layout.plan's order: slot (t, j) is row
  // plan.row_of_slot[t·k + j]),
  // which the backward of combine needs.
  Tensor combine(const Tensor& expert_out, const Tensor& gate_weights, const DispatchLayout& layout,
                 Tensor* slot_rows = nullptr);
  // Started; the sum is formed by the time the handle completes (rows = y).
  PendingRows start_combine(const Tensor& expert_out, const Tensor& gate_weights,
                            const DispatchLayout& layout, bool keep_slot_rows);

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
  // Starts moving `source`'s blocks `sends` into a new tensor of `rows` rows at `recvs`. With
  // `gather`, `source` holds token rows and the rows sent are the permuted ones
  // (row r = source[gather->token_of_row[r]]).
  PendingRows start_exchange(const Tensor& source, const kernels::PermutePlan* gather, int64_t rows,
                             const std::vector<RowBlock>& sends,
                             const std::vector<RowBlock>& recvs);
  PendingRows start_shared_exchange(const Tensor& source, const kernels::PermutePlan* gather,
                                    int64_t rows, const std::vector<RowBlock>& sends,
                                    const std::vector<RowBlock>& recvs);
  // Each rank tells the peers of `listed` where those blocks of `tensor` lie in its shared memory;
  // returns the handle, the places sent (to keep until it completes) and the tensor that will
  // hold, in order, the places of the blocks of `matching` (the other side's list).
  CommHandle exchange_places(const Tensor& tensor, const std::vector<RowBlock>& listed,
                             const std::vector<RowBlock>& matching, Tensor& sent, Tensor& places);
  // In shared memory, exchanges on one group must not overlap: each starts with a collective (the
  // places), which every rank must issue in the same order, and is numbered in that order.
  void check_previous_finished();
  uint64_t begin_shared_exchange();
  // Tells `peer` (through its control block at `control`) that exchange `number` is done here.
  void signal(int peer, const SharedRef& control, uint64_t number);
  // The handle of a shared exchange: places, then `step`, then every peer's signal.
  CommHandle shared_work(CommHandle places, std::function<void()> step, uint64_t number);
  Communicator& group_;
  int64_t n_experts_;
  int64_t experts_per_rank_;
  std::shared_ptr<NodeSharedMemory> shared_;
  std::shared_ptr<bool> last_finished_;
  // Line q (kControlLine int64s, a cache line apart) holds the last exchange rank q finished for
  // this rank; written by peers in place.
  static constexpr int64_t kControlLine = 8;
  Tensor control_;
  uint64_t shared_exchanges_ = 0;
};

}  // namespace tandem::comm
