// Linear layers that may run in FP8 (DeepSeek-V3's recipe): the input is quantised per 1×128 tile
// and kept in FP8 for the backward (instead of fp32), the weight per 128×128 block from the fp32
// master copy at every forward; dgrad runs on the quantised output gradient and the transposed
// weight blocks, wgrad on both re-quantised along the token dimension; weight gradients stay fp32.
#pragma once

#include "kernels/fp8.h"
#include "runtime/core/config.h"
#include "runtime/model/block.h"

namespace tandem {

struct Fp8Settings {
  bool enabled = false;
  kernels::QuantizeOptions options;
  kernels::Fp8Stats* stats = nullptr;  // owned by the model chunk; receives every quantisation
  static Fp8Settings from_config(const Fp8Config& config, kernels::Fp8Stats* stats);
};

// What a linear layer keeps of its forward for the backward: the fp32 input, or in FP8 the
// quantised input and weight.
struct LinearSaved {
  Tensor x;
  kernels::BlockScaledFp8 xq, wq;
  bool fp8 = false;
};

// y = x · wᵀ, in FP8 when settings.enabled.
Tensor linear(const Tensor& x, const Parameter& w, const Fp8Settings& settings, LinearSaved& saved);
// Returns dx and queues w.grad += dyᵀ · x, each in the precision the forward used.
Tensor linear_backward(const Tensor& dy, const LinearSaved& saved, Parameter& w,
                       const Fp8Settings& settings, BlockState& state);

}  // namespace tandem
