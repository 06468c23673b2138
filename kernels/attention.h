// Causal multi-head softmax attention core (after projections and RoPE, before the output
// projection). Probabilities are kept for the backward pass.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// qkv [B·T, 3·d] (q | k | v, each heads × head_dim); out [B·T, d]; probs [B, H, T, T] (row i holds
// softmax over keys 0..i, zeros above the diagonal).
void attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                       Tensor& probs);
// dqkv [B·T, 3·d] is overwritten with the gradients of q, k and v.
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, int64_t seq_len,
                        int64_t n_heads, Tensor& dqkv);

}  // namespace tandem::kernels
