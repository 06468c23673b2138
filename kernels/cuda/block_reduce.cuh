// Block-wide reductions for the CUDA kernels: every thread of a block of kThreads (a multiple of
// 32, at most 1024) passes its value and gets the block's sum or maximum back.
#pragma once

namespace tandem::kernels::cuda {

template <int kThreads, class T>
__device__ T block_sum(T v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  __shared__ T partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  __syncthreads();  // partial is reused by the next call
  return total;
}

template <int kThreads>
__device__ float block_max(float v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  __shared__ float partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float best = partial[0];
  for (int w = 1; w < kThreads / 32; ++w) best = fmaxf(best, partial[w]);
  __syncthreads();
  return best;
}

}  // namespace tandem::kernels::cuda
