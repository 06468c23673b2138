// 16-byte accesses for the memory-bound kernels: a kernel takes four fp32 per load and store
// (float4) where every pointer it touches is 16-byte aligned and its lengths are multiples of 4,
// and its scalar loop otherwise (views at odd offsets, odd widths).
#pragma once

#include <cstdint>

namespace tandem::kernels::cuda {

template <class... Pointers>
bool aligned_16(const Pointers*... pointers) {
  return ((reinterpret_cast<uintptr_t>(pointers) % 16 == 0) && ...);
}

__device__ inline float4 load_float4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ inline void store_float4(float* p, float4 v) {
  *reinterpret_cast<float4*>(p) = v;
}

}  // namespace tandem::kernels::cuda
