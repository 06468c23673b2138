// Attention sub-layer: norm, fused qkv projection, RoPE, causal attention core, output projection.
#include "runtime/model/attention_block.h"

#include <cmath>

#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/rope.h"
#include "runtime/model/ops.h"

namespace tandem {

namespace {
struct AttentionState final : BlockState {
  NormSaved norm;
  LinearSaved normed;
  Tensor qkv;       // after RoPE
  Tensor probs;     // kept form (CPU): [B, H, T, T]
  Tensor lse, out;  // fused form (GPU): [B, H, T] and the attention output
  LinearSaved attended;
};

// On a GPU the fused attention (memory O(T) per head, where the probabilities take O(T²)) for
// heads it takes, else the kept form; the CPU keeps the probabilities, the reference the gradient
// checks run on.
bool fused_attention_on(Device device, int64_t head_dim) {
  return device.type == DeviceType::kCUDA && head_dim <= kernels::kFusedAttentionGpuMaxHeadDim;
}
}  // namespace

AttentionBlock::AttentionBlock(const ModelConfig& config, int64_t layer, DType dtype, uint64_t seed,
                               Fp8Settings fp8)
    : config_(config),
      fp8_(fp8),
      layer_(layer),
      norm_(make_ones_parameter(name() + ".norm", ParameterRole::kDense, {config.d_model}, dtype)),
      wqkv_(make_parameter(name() + ".wqkv", ParameterRole::kDense,
                           {3 * config.d_model, config.d_model}, dtype, config.init_std, seed)),
      // Output projections start smaller (GPT-2's 1/sqrt(2·layers)) so the residual stream's
      // variance does not grow with depth.
      wo_(make_parameter(name() + ".wo", ParameterRole::kDense, {config.d_model, config.d_model},
                         dtype, config.init_std / std::sqrt(2.0 * config.n_layers), seed)) {}

Tensor AttentionBlock::forward(const Tensor& x, std::unique_ptr<BlockState>& state) {
  auto st = std::make_unique<AttentionState>();
  const int64_t n = x.dim(0), batch = n / config_.seq_len;
  st->qkv = linear(rmsnorm(x, norm_, config_.norm_eps, st->norm), wqkv_, fp8_, st->normed);
  kernels::rope_apply(st->qkv, config_.seq_len, config_.n_heads, config_.rope_theta, false);
  Tensor attended = Tensor::empty({n, config_.d_model}, x.dtype(), x.device());
  if (fused_attention_on(x.device(), config_.d_model / config_.n_heads)) {
    st->lse = Tensor::empty({batch, config_.n_heads, config_.seq_len}, x.dtype(), x.device());
    kernels::fused_attention_forward(st->qkv, config_.seq_len, config_.n_heads, attended, st->lse);
    st->out = attended;
  } else {
    st->probs = Tensor::empty({batch, config_.n_heads, config_.seq_len, config_.seq_len}, x.dtype(),
                              x.device());
    kernels::attention_forward(st->qkv, config_.seq_len, config_.n_heads, attended, st->probs);
  }
  Tensor y = linear(attended, wo_, fp8_, st->attended);
  kernels::axpy(1.0, x, y);
  state = std::move(st);
  return y;
}

Tensor AttentionBlock::backward_input(const Tensor& dy, BlockState& state) {
  auto& st = static_cast<AttentionState&>(state);
  Tensor dattended = linear_backward(dy, st.attended, wo_, fp8_, st);
  Tensor dqkv = Tensor::empty(st.qkv.shape(), dy.dtype(), dy.device());
  if (st.lse.defined()) {
    kernels::fused_attention_backward(dattended, st.qkv, st.out, st.lse, config_.seq_len,
                                      config_.n_heads, dqkv);
    st.lse = st.out = Tensor();
  } else {
    kernels::attention_backward(dattended, st.qkv, st.probs, config_.seq_len, config_.n_heads,
                                dqkv);
    st.probs = Tensor();  // the largest activation; not needed by the weight gradients
  }
  kernels::rope_apply(dqkv, config_.seq_len, config_.n_heads, config_.rope_theta, true);
  Tensor dnormed = linear_backward(dqkv, st.normed, wqkv_, fp8_, st);
  Tensor dx = rmsnorm_backward(dnormed, st.norm, norm_, st);
  kernels::axpy(1.0, dy, dx);
  return dx;
}

}  // namespace tandem
