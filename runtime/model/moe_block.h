// Pre-norm mixture-of-experts FFN sub-layer in DeepSeek-V3's form:
//   y = x + shared(norm(x)) + Σ_{e ∈ topk} g_e · expert_e(norm(x))
// with sigmoid routing, selection bias for auxiliary-loss-free balancing, and no capacity limit.
// forward_task / backward_task are the block's one walk through its sub-stages, with an
// MoeExchange (runtime/model/moe_exchange.h) moving the routed rows to the experts and back
// between them: forward() and backward_input() run it with every expert on this rank, expert
// parallelism (parallelism/) with the dispatch and combine all-to-alls. The sub-stages are public
// for the exchanges and for tests that compose them by hand.
#pragma once

#include <any>
#include <functional>
#include <vector>

#include "kernels/permute.h"
#include "runtime/core/config.h"
#include "runtime/core/phased_task.h"
#include "runtime/model/block.h"
#include "runtime/model/ops.h"

namespace tandem {

class MoeExchange;

// Which routed experts a block holds: the index-th of `count` equal contiguous slices (expert
// parallelism places slice r on rank r of the expert group); {0, 1} is all of them.
struct ExpertShard {
  int64_t index = 0;
  int64_t count = 1;
};

struct MoeState final : BlockState {
  NormSaved norm;
  Tensor normed;
  Tensor affinity;
  Tensor expert_ids;    // int32 [N, k]
  Tensor gate_weights;  // [N, k]
  kernels::PermutePlan plan;
  std::vector<int64_t> expert_offsets;  // rows of each local expert in the expert stage's input
  std::vector<MlpSaved> experts;        // one per local expert
  Tensor expert_out;                    // [rows, d], same grouping as the expert stage's input
  MlpSaved shared;
  Tensor shared_out;
  Tensor dgate_weights;
  std::any dispatch;  // what an exchange between ranks keeps for the backward: its layout
};

class MoeFfnBlock final : public Block {
 public:
  MoeFfnBlock(const ModelConfig& config, int64_t layer, DType dtype, uint64_t seed,
              Fp8Settings fp8 = {}, ExpertShard shard = {});
  std::string name() const override { return "layers." + std::to_string(layer_) + ".ffn"; }
  int64_t layer() const { return layer_; }
  Tensor forward(const Tensor& x, std::unique_ptr<BlockState>& state) override;
  Tensor backward_input(const Tensor& dy, BlockState& state) override;
  std::vector<Parameter*> parameters() override;

  // The walk: route, the exchange's plan and dispatch (the shared expert runs while the rows
  // travel), the local experts, the exchange's combine, then the shared expert and the residual
  // are added; *y receives the output. It pauses wherever the exchange has something in flight.
  PhasedTask forward_task(Tensor x, MoeState& st, MoeExchange& exchange, Tensor* y);
  // Backward, in reverse: the exchange takes d(output) to the experts and their input gradients
  // back; *dx receives the input gradient, weight gradients are queued. in_gap, when set, runs
  // right after each of the two movements starts, for work that fills the time it travels: first
  // in_gap(false), then in_gap(true), once the experts have queued their weight gradients.
  PhasedTask backward_task(Tensor dy, MoeState& st, MoeExchange& exchange, Tensor* dx,
                           std::function<void(bool experts_queued)> in_gap = {});

  // Forward sub-stages.
  // Norm, router, top-k and the permutation plan (the copies themselves are made by whoever moves
  // them: the exchange); counts expert load.
  void route(const Tensor& x, MoeState& st);
  // rows are grouped by this block's experts: expert first_local_expert() + i owns rows
  // [expert_offsets[i], expert_offsets[i + 1]). The outputs go to `out` when given (the
  // dispatcher's buffer, so combine reads them in place), else to a new tensor.
  Tensor run_experts(const Tensor& rows, const std::vector<int64_t>& expert_offsets, MoeState& st,
                     Tensor out = {});
  void run_shared(MoeState& st);
  // y = x + routed + shared, where `routed` ([N, d]) is the gate-weighted sum of the routed experts
  // the combine formed; y is formed in routed's memory, which the caller hands over. `slot_rows`,
  // when given, are the expert outputs in the plan's order, kept for unpermute_backward.
  Tensor add_routed(const Tensor& x, Tensor routed, MoeState& st, Tensor slot_rows = {});
  // Backward sub-stages, in reverse.
  Tensor unpermute_backward(const Tensor& dy, MoeState& st);  // → d(expert_out); sets dgate_weights
  Tensor experts_backward(const Tensor& dexpert_out, MoeState& st);  // → d(rows)
  // → dx, from d(normed) of the routed copies summed per token (`drouted`, [N, d]) and
  // st.dgate_weights, both formed by the exchange.
  Tensor route_backward(const Tensor& dy, Tensor drouted, MoeState& st);

  // Auxiliary-loss-free balancing: tokens routed to each expert since the last reset, and the bias
  // update from a load (the caller sums it over the whole global batch first).
  const std::vector<int64_t>& expert_load() const { return load_; }
  void reset_expert_load() { load_.assign(load_.size(), 0); }
  void update_bias(const std::vector<int64_t>& global_load);
  const Tensor& bias() const { return bias_; }
  // Sets the balancing bias (a copy of another model's, or a checkpoint's); same shape [E].
  void set_bias(const Tensor& bias);
  void move_bias_to(Device device) { bias_ = bias_.to(device); }
  // The bias's name in the training state ("layers.3.ffn.router_bias"), as stable as the
  // parameters' names.
  std::string bias_name() const { return name() + ".router_bias"; }
  const Fp8Settings& fp8() const { return fp8_; }
  int64_t n_experts() const { return config_.n_routed_experts; }  // routed, over all ranks
  int64_t n_local_experts() const { return static_cast<int64_t>(w13_.size()); }
  int64_t first_local_expert() const { return first_expert_; }

 private:
  ModelConfig config_;
  Fp8Settings fp8_;
  int64_t layer_;
  Parameter norm_;
  Parameter router_;  // [E, d]
  Parameter shared_w13_, shared_w2_;
  int64_t first_expert_ = 0;
  std::vector<Parameter> w13_, w2_;  // per local expert: [2·d_expert, d], [d, d_expert]
  Tensor bias_;                      // [E], selection only: never receives a gradient
  std::vector<int64_t> load_;
};

}  // namespace tandem
