// Output head: final norm, vocabulary projection and fused cross-entropy.
#include "runtime/model/head_block.h"

#include "kernels/loss.h"

namespace tandem {

namespace {
struct HeadState final : BlockState {
  NormSaved norm;
  Tensor normed;
  Tensor dlogits;
};
}  // namespace

HeadBlock::HeadBlock(const ModelConfig& config, DType dtype, uint64_t seed)
    : norm_eps_(config.norm_eps),
      norm_(make_ones_parameter("head.norm", ParameterRole::kDense, {config.d_model}, dtype)),
      weight_(make_parameter("head.weight", ParameterRole::kDense,
                             {config.vocab_size, config.d_model}, dtype, config.init_std, seed)) {}

double HeadBlock::forward_loss(const Tensor& x, const Tensor& targets, Pass pass,
                               std::unique_ptr<BlockState>& state) {
  auto st = std::make_unique<HeadState>();
  st->normed = rmsnorm(x, norm_, norm_eps_, st->norm);
  Tensor logits = linear(st->normed, weight_);
  if (!pass.training()) {
    state.reset();
    return kernels::cross_entropy(logits, targets, 0, nullptr);
  }
  st->dlogits = logits;  // the gradient overwrites the logits in place
  const double loss = kernels::cross_entropy(logits, targets, pass.grad_scale(), &st->dlogits);
  state = std::move(st);
  return loss;
}

Tensor HeadBlock::backward_input(BlockState& state) {
  auto& st = static_cast<HeadState&>(state);
  TANDEM_CHECK(st.dlogits.defined(), "head backward after a forward without gradient");
  Tensor dnormed = linear_backward(st.dlogits, st.normed, weight_, st);
  return rmsnorm_backward(dnormed, st.norm, norm_, st);
}

}  // namespace tandem
