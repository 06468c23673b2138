// The CUDA side of kernels/attention.h: causal softmax attention on fp32 device tensors with the
// CPU reference's layout (qkv [B·T, 3·d], probabilities [B, H, T, T] kept for the backward).
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                       Tensor& probs);
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, int64_t seq_len,
                        int64_t n_heads, Tensor& dqkv);

}  // namespace tandem::kernels::cuda
