// Rotary position embedding on the query and key parts of a fused qkv activation.
#pragma once

#include <vector>

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// qkv [B·T, 3·d] with d = heads·head_dim; rows are B sequences of seq_len tokens, so a row's
// position is row % seq_len. Each head's channel pairs (2i, 2i+1) are rotated by
// position·theta^(−2i/head_dim). inverse=true applies the transpose rotation (the backward pass).
void rope_apply(Tensor& qkv, int64_t seq_len, int64_t n_heads, double theta, bool inverse);

// The rotations rope_apply applies, [seq_len, head_dim / 2] each: cos and sin (negated when
// inverse) of position·theta^(−2i/head_dim), computed in double so that fp32 and fp64 runs, and
// the CPU and the GPU, rotate by the same angles.
struct RopeTable {
  std::vector<double> cos, sin;
};
RopeTable rope_table(int64_t seq_len, int64_t head_dim, double theta, bool inverse);

}  // namespace tandem::kernels
