// Causal multi-head softmax attention core (after projections and RoPE, before the output
// projection), in two forms: keeping the probabilities for the backward pass (O(T²) per head),
// or fused, keeping only each row's log-sum-exp (O(T)), from which the backward recomputes them.
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

// The widest head the fused form takes on a GPU (each of a warp's lanes holds 1/32 of a row).
inline constexpr int64_t kFusedAttentionGpuMaxHeadDim = 256;

// The same output, and lse [B, H, T] = log Σ_j≤i exp(q_i·k_j / √head_dim) for each row.
void fused_attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                             Tensor& lse);
// The same gradients from the output and its lse instead of the probabilities.
void fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                              const Tensor& lse, int64_t seq_len, int64_t n_heads, Tensor& dqkv);

}  // namespace tandem::kernels
