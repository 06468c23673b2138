// SwiGLU on the GPU: one thread per output element (a grid-stride loop), reading the gate and up
// halves of its row.
#include "kernels/cuda/activation.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

__global__ void swiglu_forward_kernel(const float* gate_up, int64_t n, int64_t f, float* h) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * f;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    const float gate = gate_up[i * 2 * f + j], up = gate_up[i * 2 * f + f + j];
    h[e] = gate / (1.0f + expf(-gate)) * up;
  }
}

__global__ void swiglu_backward_kernel(const float* dh, const float* gate_up, int64_t n, int64_t f,
                                       float* dgate_up) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * f;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    const float gate = gate_up[i * 2 * f + j], up = gate_up[i * 2 * f + f + j];
    const float sig = 1.0f / (1.0f + expf(-gate));
    dgate_up[i * 2 * f + f + j] = dh[e] * gate * sig;
    dgate_up[i * 2 * f + j] = dh[e] * up * sig * (1.0f + gate * (1.0f - sig));
  }
}

}  // namespace

void swiglu_forward(const Tensor& gate_up, Tensor& h) {
  require_fp32({&gate_up, &h}, "swiglu_forward");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  if (n * f == 0) return;
  tandem::cuda::DeviceGuard guard(h.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(h.device().index).handle();
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
  swiglu_backward_kernel<<<blocks_for(n * f), kThreads, 0, stream>>>(
      dh.data<float>(), gate_up.data<float>(), n, f, dgate_up.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
