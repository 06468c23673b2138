// Dense SwiGLU FFN sub-layer.
#include "runtime/model/dense_ffn_block.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "runtime/model/ops.h"

namespace tandem {

namespace {
struct DenseFfnState final : BlockState {
  NormSaved norm;
  MlpSaved mlp;
};
}  // namespace

DenseFfnBlock::DenseFfnBlock(const ModelConfig& config, int64_t layer, DType dtype, uint64_t seed,
                             Fp8Settings fp8)
    : norm_eps_(config.norm_eps),
      fp8_(fp8),
      layer_(layer),
      norm_(make_ones_parameter(name() + ".norm", ParameterRole::kDense, {config.d_model}, dtype)),
      w13_(make_parameter(name() + ".w13", ParameterRole::kDense, {2 * config.d_ff, config.d_model},
                          dtype, config.init_std, seed)),
      w2_(make_parameter(name() + ".w2", ParameterRole::kDense, {config.d_model, config.d_ff},
                         dtype, config.init_std / std::sqrt(2.0 * config.n_layers), seed)) {}

Tensor DenseFfnBlock::forward(const Tensor& x, std::unique_ptr<BlockState>& state) {
  auto st = std::make_unique<DenseFfnState>();
  Tensor y = swiglu_mlp(rmsnorm(x, norm_, norm_eps_, st->norm), w13_, w2_, fp8_, st->mlp);
  kernels::axpy(1.0, x, y);
  state = std::move(st);
  return y;
}

Tensor DenseFfnBlock::backward_input(const Tensor& dy, BlockState& state) {
  auto& st = static_cast<DenseFfnState&>(state);
  Tensor dx =
      rmsnorm_backward(swiglu_mlp_backward(dy, st.mlp, w13_, w2_, fp8_, st), st.norm, norm_, st);
  kernels::axpy(1.0, dy, dx);
  return dx;
}

}  // namespace tandem
