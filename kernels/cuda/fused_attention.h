// The CUDA side of kernels/attention.h's fused form: causal attention on fp32 device tensors that
// keeps each row's log-sum-exp [B, H, T] instead of the probabilities, recomputing them in the
// backward (memory O(T) per head where the kept form needs O(T²)).
#pragma once

#include "kernels/attention.h"
#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

constexpr int64_t kFusedAttentionMaxHeadDim = kFusedAttentionGpuMaxHeadDim;

void fused_attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                             Tensor& lse);
void fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                              const Tensor& lse, int64_t seq_len, int64_t n_heads, Tensor& dqkv);

}  // namespace tandem::kernels::cuda
