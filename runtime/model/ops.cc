// Linear, RMSNorm and SwiGLU MLP steps with deferred weight gradients.
#include "runtime/model/ops.h"

#include "kernels/activation.h"
#include "kernels/linear.h"
#include "kernels/norm.h"

namespace tandem {

Tensor linear(const Tensor& x, const Parameter& w) {
  Tensor y = Tensor::empty({x.dim(0), w.value.dim(0)}, x.dtype(), x.device());
  kernels::linear_forward(x, w.value, y);
  return y;
}

Tensor linear_backward(const Tensor& dy, const Tensor& x, Parameter& w, BlockState& state) {
  Tensor dx = Tensor::empty({dy.dim(0), w.value.dim(1)}, dy.dtype(), dy.device());
  kernels::linear_dgrad(dy, w.value, dx);
  state.deferred_wgrad.push_back([dy, x, &w] { kernels::linear_wgrad(dy, x, w.grad); });
  return dx;
}

Tensor rmsnorm(const Tensor& x, const Parameter& g, double eps, NormSaved& saved) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  saved.x = x;
  saved.rstd = Tensor::empty({x.dim(0)}, x.dtype(), x.device());
  kernels::rmsnorm_forward(x, g.value, eps, y, saved.rstd);
  return y;
}

Tensor rmsnorm_backward(const Tensor& dy, const NormSaved& saved, Parameter& g, BlockState& state) {
  Tensor dx = Tensor::empty(saved.x.shape(), dy.dtype(), dy.device());
  kernels::rmsnorm_dgrad(dy, saved.x, g.value, saved.rstd, dx);
  state.deferred_wgrad.push_back(
      [dy, saved, &g] { kernels::rmsnorm_wgrad(dy, saved.x, saved.rstd, g.grad); });
  return dx;
}

Tensor swiglu_mlp(const Tensor& x, const Parameter& w13, const Parameter& w2,
                  const Fp8Settings& fp8, MlpSaved& saved) {
  saved.gate_up = linear(x, w13, fp8, saved.in13);
  Tensor h = Tensor::empty({x.dim(0), saved.gate_up.dim(1) / 2}, x.dtype(), x.device());
  kernels::swiglu_forward(saved.gate_up, h);
  return linear(h, w2, fp8, saved.in2);
}

Tensor swiglu_mlp_backward(const Tensor& dy, const MlpSaved& saved, Parameter& w13, Parameter& w2,
                           const Fp8Settings& fp8, BlockState& state) {
  Tensor dh = linear_backward(dy, saved.in2, w2, fp8, state);
  Tensor dgate_up = Tensor::empty(saved.gate_up.shape(), dy.dtype(), dy.device());
  kernels::swiglu_backward(dh, saved.gate_up, dgate_up);
  return linear_backward(dgate_up, saved.in13, w13, fp8, state);
}

}  // namespace tandem
