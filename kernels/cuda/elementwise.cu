// Residual adds, scaling and the sum of squares (the gradient norm's) on the GPU: grid-stride
// loops; the sum of squares as one double partial per block, added on the host in block order.
#include <vector>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;

unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

__global__ void axpy_kernel(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += alpha * x[i];
}

__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= alpha;
}

__global__ void sum_of_squares_kernel(const float* x, int64_t n, double* partials) {
  double sum = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    sum += static_cast<double>(x[i]) * x[i];
  sum = block_sum<kThreads>(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

}  // namespace

void axpy(double alpha, const Tensor& x, Tensor& y) {
  require_fp32({&x, &y}, "axpy");
  const int64_t n = x.numel();
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(y.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(y.device().index).handle();
  axpy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<float>(alpha), x.data<float>(),
                                                      y.data<float>(), n);
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void scale(Tensor& x, double alpha) {
  require_fp32({&x}, "scale");
  const int64_t n = x.numel();
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(x.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x.data<float>(), static_cast<float>(alpha),
                                                       n);
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

double sum_of_squares(const Tensor& x) {
  require_fp32({&x}, "sum_of_squares");
  const int64_t n = x.numel();
  if (n == 0) return 0;
  const unsigned blocks = blocks_for(n);
  Tensor partials = Tensor::empty({static_cast<int64_t>(blocks)}, DType::kF64, x.device());
  {
    tandem::cuda::DeviceGuard guard(x.device().index);
    const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
    sum_of_squares_kernel<<<blocks, kThreads, 0, stream>>>(x.data<float>(), n,
                                                           partials.data<double>());
    TANDEM_CHECK_CUDA(cudaGetLastError());
  }
  const Tensor host = partials.to(Device::cpu());  // waits for the kernel
  double total = 0;
  for (unsigned b = 0; b < blocks; ++b) total += host.data<double>()[b];
  return total;
}

}  // namespace tandem::kernels::cuda
