// Pre-norm mixture-of-experts FFN sub-layer in DeepSeek-V3's form:
//   y = x + shared(norm(x)) + Σ_{e ∈ topk} g_e · expert_e(norm(x))
// with sigmoid routing, selection bias for auxiliary-loss-free balancing, and no capacity limit.
// Its sub-stages are public because expert parallelism (parallelism/) inserts the dispatch
// all-to-all between route() and run_experts() and the combine all-to-all between run_experts()
// and unpermute(); forward() is the single-rank composition of the same calls.
#pragma once

#include <any>
#include <vector>

#include "kernels/permute.h"
#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/ops.h"

namespace tandem {

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
  std::any dispatch;  // what expert parallelism (parallelism/) keeps for the backward: the layout
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

  // Forward sub-stages.
  // Norm, router, top-k and the permutation plan (the copies themselves are made by whoever moves
  // them: forward() here, the dispatcher under expert parallelism); counts expert load.
  void route(const Tensor& x, MoeState& st);
  // rows are grouped by this block's experts: expert first_local_expert() + i owns rows
  // [expert_offsets[i], expert_offsets[i + 1]). The outputs go to `out` when given (the
  // dispatcher's buffer, so combine reads them in place), else to a new tensor.
  Tensor run_experts(const Tensor& rows, const std::vector<int64_t>& expert_offsets, MoeState& st,
                     Tensor out = {});
  void run_shared(MoeState& st);
  Tensor unpermute(const Tensor& x, const Tensor& expert_out, MoeState& st);  // y = x + ...
  // y = x + routed + shared, when the gate-weighted sum of the routed experts (`routed`, [N, d])
  // was formed elsewhere (by the combine). `slot_rows`, when given, are the expert outputs in the
  // plan's order, kept for unpermute_backward.
  Tensor add_routed(const Tensor& x, const Tensor& routed, MoeState& st, Tensor slot_rows = {});
  // Backward sub-stages, in reverse.
  Tensor unpermute_backward(const Tensor& dy, MoeState& st);  // → d(expert_out); sets dgate_weights
  Tensor experts_backward(const Tensor& dexpert_out, MoeState& st);                // → d(rows)
  Tensor route_backward(const Tensor& dy, const Tensor& dpermuted, MoeState& st);  // → dx
  // The same from d(normed) of the routed copies already summed per token, with st.dgate_weights
  // set by the caller (hierarchical dispatch forms both on the experts' side).
  Tensor route_backward_summed(const Tensor& dy, Tensor drouted, MoeState& st);

  // Auxiliary-loss-free balancing: tokens routed to each expert since the last reset, and the bias
  // update from a load (the caller sums it over the whole global batch first).
  const std::vector<int64_t>& expert_load() const { return load_; }
  void reset_expert_load() { load_.assign(load_.size(), 0); }
  void update_bias(const std::vector<int64_t>& global_load);
  const Tensor& bias() const { return bias_; }
  // Sets the balancing bias (a copy of another model's, or a checkpoint's); same shape [E].
  void set_bias(const Tensor& bias);
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
