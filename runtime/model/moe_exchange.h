// How an MoE block's routed rows reach its experts and come back: the strategy that the block's
// one forward and backward walk (MoeFfnBlock::forward_task / backward_task) calls between its
// sub-stages. Each start_ call returns what is in flight; the walk pauses on it and then takes the
// result with the call that follows. LocalMoeExchange, here, is the single rank: every expert is
// on it, nothing travels, and each step is complete when it returns. Expert parallelism's
// strategies (parallelism/chunk_tasks.h) move the rows between the ranks of an expert group.
#pragma once

#include <vector>

#include "runtime/core/phased_task.h"
#include "runtime/core/step_events.h"
#include "runtime/core/tensor.h"

namespace tandem {

class MoeFfnBlock;
struct MoeState;

// What reached this rank's experts: rows grouped by local expert (expert first_local_expert() + i
// owns rows [expert_offsets[i], expert_offsets[i + 1])), and where the experts write their
// outputs (undefined: a new tensor).
struct ExpertRows {
  Tensor rows;
  std::vector<int64_t> expert_offsets;
  Tensor output;
};

// What the combine brought back: the gate-weighted sum of the routed experts per token [N, d],
// which the walk then owns (the block's output is formed in its memory), and, when the token's
// side keeps them, the expert outputs in the permutation plan's order (for unpermute_backward;
// undefined when the strategy keeps its own for the backward).
struct CombinedRows {
  Tensor routed;
  Tensor slot_rows;
};

class MoeExchange {
 public:
  virtual ~MoeExchange() = default;
  // Where the walk that uses this exchange records its movements and weight-gradient runs
  // (runtime/core/step_events.h); null: nowhere.
  void set_event_log(StepEventLog* log) { events_ = log; }
  StepEventLog* event_log() const { return events_; }

  // Forward, after route(st): the row counts, then every routed copy of st.normed to its expert.
  virtual InFlight& start_plan(MoeFfnBlock& moe, MoeState& st) = 0;
  virtual InFlight& start_dispatch(MoeFfnBlock& moe, MoeState& st) = 0;
  virtual ExpertRows received_rows(MoeFfnBlock& moe, MoeState& st) = 0;
  // The experts' outputs back to the tokens, summed with the gate weights.
  virtual InFlight& start_combine(MoeFfnBlock& moe, const Tensor& expert_out, MoeState& st) = 0;
  virtual CombinedRows combined(MoeState& st) = 0;

  // Backward, in reverse: the combine's backward moves d(output) to the experts as gradients of
  // their outputs and sets st.dgate_weights; the dispatch's backward moves the gradients of the
  // experts' inputs back and sums each token's copies into d(normed) [N, d].
  virtual InFlight& start_combine_backward(MoeFfnBlock& moe, const Tensor& dy, MoeState& st) = 0;
  virtual Tensor received_output_grads(MoeState& st) = 0;
  virtual InFlight& start_dispatch_backward(MoeFfnBlock& moe, const Tensor& d_rows,
                                            MoeState& st) = 0;
  virtual Tensor received_token_grads(MoeState& st) = 0;

 protected:
  StepEventLog* events_ = nullptr;
};

// Every expert on this rank: the dispatch is the permutation of the plan, the combine its
// weighted inverse, and their backwards the same kernels' backwards.
class LocalMoeExchange final : public MoeExchange {
 public:
  InFlight& start_plan(MoeFfnBlock& moe, MoeState& st) override;
  InFlight& start_dispatch(MoeFfnBlock& moe, MoeState& st) override;
  ExpertRows received_rows(MoeFfnBlock& moe, MoeState& st) override;
  InFlight& start_combine(MoeFfnBlock& moe, const Tensor& expert_out, MoeState& st) override;
  CombinedRows combined(MoeState& st) override;
  InFlight& start_combine_backward(MoeFfnBlock& moe, const Tensor& dy, MoeState& st) override;
  Tensor received_output_grads(MoeState& st) override;
  InFlight& start_dispatch_backward(MoeFfnBlock& moe, const Tensor& d_rows, MoeState& st) override;
  Tensor received_token_grads(MoeState& st) override;

 private:
  Completed done_;
  Tensor rows_;       // the step's result, until the walk takes it
  Tensor slot_rows_;  // the expert outputs the combine read
};

}  // namespace tandem
