// The steps every block is made of, each pairing an input gradient computed now with a weight
// gradient queued for backward_weight: a linear layer and an RMSNorm.
#pragma once

#include "runtime/model/block.h"
#include "runtime/model/fp8_linear.h"

namespace tandem {

// y = x · wᵀ.
Tensor linear(const Tensor& x, const Parameter& w);
// Returns dx = dy · w and queues w.grad += dyᵀ · x.
Tensor linear_backward(const Tensor& dy, const Tensor& x, Parameter& w, BlockState& state);

struct NormSaved {
  Tensor x;
  Tensor rstd;
};
// y = rmsnorm(x) · g; keeps x and 1/rms for the backward.
Tensor rmsnorm(const Tensor& x, const Parameter& g, double eps, NormSaved& saved);
// Returns dx and queues g.grad += Σ dy ⊙ x · rstd.
Tensor rmsnorm_backward(const Tensor& dy, const NormSaved& saved, Parameter& g, BlockState& state);

// A SwiGLU MLP y = w2 · (silu(x·w1ᵀ) ⊙ x·w3ᵀ) with w1 and w3 fused as w13 = [w1; w3].
// Its two linear layers run in FP8 when the settings say so; SwiGLU itself stays fp32.
struct MlpSaved {
  LinearSaved in13;  // x
  Tensor gate_up;
  LinearSaved in2;  // h = silu(gate) ⊙ up
};
Tensor swiglu_mlp(const Tensor& x, const Parameter& w13, const Parameter& w2,
                  const Fp8Settings& fp8, MlpSaved& saved);
Tensor swiglu_mlp_backward(const Tensor& dy, const MlpSaved& saved, Parameter& w13, Parameter& w2,
                           const Fp8Settings& fp8, BlockState& state);

}  // namespace tandem
