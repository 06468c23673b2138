// The CUDA side of kernels/rope.h: the rotation of the q and k thirds of an fp32 qkv activation
// in device memory, on the device's compute stream, with the CPU's table (kernels::rope_table)
// rounded to fp32 as the CPU rounds it.
#pragma once

#include "kernels/rope.h"

namespace tandem::kernels::cuda {

void rope_apply(Tensor& qkv, int64_t seq_len, int64_t n_heads, const RopeTable& table);

}  // namespace tandem::kernels::cuda
