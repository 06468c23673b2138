// The CUDA side of kernels/attention.h's fused form: causal attention on fp32 device tensors that
// keeps each row's log-sum-exp [B, H, T] instead of the probabilities, recomputing them in the
// backward (memory O(T) per head where the kept form needs O(T²)).
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

// The largest head the fused kernels take (each lane holds head_dim / 32 of a row's columns).
constexpr int64_t kFusedAttentionMaxHeadDim = 256;

void fused_attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                             Tensor& lse);
void fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                              const Tensor& lse, int64_t seq_len, int64_t n_heads, Tensor& dqkv);

}  // namespace tandem::kernels::cuda
