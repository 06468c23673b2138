// SwiGLU on the GPU: one thread per output element (a grid-stride loop), reading the gate and up
// halves of its row; four elements per thread with 16-byte accesses where the width is a multiple
// of 4 and the pointers are aligned.
#include "kernels/cuda/activation.h"
#include "kernels/cuda/tensor_checks.h"
#include "kernels/cuda/vector_access.cuh"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

__device__ inline float swiglu_of(float gate, float up) {
  return gate / (1.0f + expf(-gate)) * up;
}

__device__ inline void swiglu_grad_of(float dh, float gate, float up, float& dgate, float& dup) {
  const float sig = 1.0f / (1.0f + expf(-gate));
  dup = dh * gate * sig;
  dgate = dh * up * sig * (1.0f + gate * (1.0f - sig));
}

__global__ void swiglu_forward_kernel(const float* gate_up, int64_t n, int64_t f, float* h) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * f;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    h[e] = swiglu_of(gate_up[i * 2 * f + j], gate_up[i * 2 * f + f + j]);
  }
}

// e counts packs of four outputs; f is a multiple of 4.
__global__ void swiglu_forward4_kernel(const float* gate_up, int64_t n, int64_t f, float* h) {
  const int64_t row_packs = f / 4;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * row_packs;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / row_packs, j = 4 * (e % row_packs);
    const float4 g = load_float4(gate_up + i * 2 * f + j),
                 u = load_float4(gate_up + i * 2 * f + f + j);
    store_float4(h + 4 * e, make_float4(swiglu_of(g.x, u.x), swiglu_of(g.y, u.y),
                                        swiglu_of(g.z, u.z), swiglu_of(g.w, u.w)));
  }
}

__global__ void swiglu_backward_kernel(const float* dh, const float* gate_up, int64_t n, int64_t f,
                                       float* dgate_up) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * f;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    swiglu_grad_of(dh[e], gate_up[i * 2 * f + j], gate_up[i * 2 * f + f + j],
                   dgate_up[i * 2 * f + j], dgate_up[i * 2 * f + f + j]);
  }
}

__global__ void swiglu_backward4_kernel(const float* dh, const float* gate_up, int64_t n, int64_t f,
                                        float* dgate_up) {
  const int64_t row_packs = f / 4;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * row_packs;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / row_packs, j = 4 * (e % row_packs);
    const float4 d = load_float4(dh + 4 * e), g = load_float4(gate_up + i * 2 * f + j),
                 u = load_float4(gate_up + i * 2 * f + f + j);
    float4 dg, du;
    swiglu_grad_of(d.x, g.x, u.x, dg.x, du.x);
    swiglu_grad_of(d.y, g.y, u.y, dg.y, du.y);
    swiglu_grad_of(d.z, g.z, u.z, dg.z, du.z);
    swiglu_grad_of(d.w, g.w, u.w, dg.w, du.w);
    store_float4(dgate_up + i * 2 * f + j, dg);
    store_float4(dgate_up + i * 2 * f + f + j, du);
  }
}

}  // namespace

void swiglu_forward(const Tensor& gate_up, Tensor& h) {
  require_fp32({&gate_up, &h}, "swiglu_forward");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  if (n * f == 0) return;
  tandem::cuda::DeviceGuard guard(h.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(h.device().index).handle();
  if (f % 4 == 0 && aligned_16(gate_up.data<float>(), h.data<float>()))
    swiglu_forward4_kernel<<<blocks_for(n * f / 4), kThreads, 0, stream>>>(gate_up.data<float>(), n,
                                                                           f, h.data<float>());
  else
    swiglu_forward_kernel<<<blocks_for(n * f), kThreads, 0, stream>>>(gate_up.data<float>(), n, f,
                                                                      h.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void swiglu_backward(const Tensor& dh, const Tensor& gate_up, Tensor& dgate_up) {
  require_fp32({&dh, &gate_up, &dgate_up}, "swiglu_backward");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  if (n * f == 0) return;
  tandem::cuda::DeviceGuard guard(dh.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(dh.device().index).handle();
  if (f % 4 == 0 && aligned_16(dh.data<float>(), gate_up.data<float>(), dgate_up.data<float>()))
    swiglu_backward4_kernel<<<blocks_for(n * f / 4), kThreads, 0, stream>>>(
        dh.data<float>(), gate_up.data<float>(), n, f, dgate_up.data<float>());
  else
    swiglu_backward_kernel<<<blocks_for(n * f), kThreads, 0, stream>>>(
        dh.data<float>(), gate_up.data<float>(), n, f, dgate_up.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
