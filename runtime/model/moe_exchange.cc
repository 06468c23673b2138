// The single-rank MoE exchange: permutation, weighted un-permutation and their backwards.
#include "runtime/model/moe_exchange.h"

#include <utility>

#include "kernels/permute.h"
#include "runtime/model/moe_block.h"

namespace tandem {

InFlight& LocalMoeExchange::start_plan(MoeFfnBlock& moe, MoeState&) {
  TANDEM_CHECK(moe.n_local_experts() == moe.n_experts(), "the single-rank exchange of ", moe.name(),
               " needs every expert; this block holds ", moe.n_local_experts(), " of ",
               moe.n_experts(), " (expert parallelism moves the rows between ranks instead)");
  return done_;
}

InFlight& LocalMoeExchange::start_dispatch(MoeFfnBlock&, MoeState& st) {
  rows_ = Tensor::empty({st.plan.n_tokens * st.plan.top_k, st.normed.dim(1)}, st.normed.dtype(),
                        st.normed.device());
  kernels::permute_rows(st.normed, st.plan, rows_);
  return done_;
}

ExpertRows LocalMoeExchange::received_rows(MoeFfnBlock&, MoeState& st) {
  return {std::exchange(rows_, Tensor()), st.plan.expert_offsets, Tensor()};
}

InFlight& LocalMoeExchange::start_combine(MoeFfnBlock&, const Tensor& expert_out, MoeState& st) {
  rows_ =
      Tensor::empty({st.plan.n_tokens, expert_out.dim(1)}, expert_out.dtype(), expert_out.device());
  kernels::unpermute_weighted(expert_out, st.gate_weights, st.plan, rows_);
  slot_rows_ = expert_out;  // the plan's order is the experts' order on one rank
  return done_;
}

CombinedRows LocalMoeExchange::combined(MoeState&) {
  return {std::exchange(rows_, Tensor()), std::exchange(slot_rows_, Tensor())};
}

InFlight& LocalMoeExchange::start_combine_backward(MoeFfnBlock& moe, const Tensor& dy,
                                                   MoeState& st) {
  rows_ = moe.unpermute_backward(dy, st);
  return done_;
}

Tensor LocalMoeExchange::received_output_grads(MoeState&) {
  return std::exchange(rows_, Tensor());
}

InFlight& LocalMoeExchange::start_dispatch_backward(MoeFfnBlock&, const Tensor& d_rows,
                                                    MoeState& st) {
  rows_ = Tensor::empty({st.plan.n_tokens, d_rows.dim(1)}, d_rows.dtype(), d_rows.device());
  kernels::permute_rows_backward(d_rows, st.plan, rows_);
  return done_;
}

Tensor LocalMoeExchange::received_token_grads(MoeState&) {
  return std::exchange(rows_, Tensor());
}

}  // namespace tandem
