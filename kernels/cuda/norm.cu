// RMSNorm on the GPU: one thread block per row for the forward and the input gradient (a block
// reduction of the row's sum; 16-byte accesses where the width is a multiple of 4 and the
// pointers are aligned), and the weight gradient as column sums over rows, one thread per column
// with coalesced reads of each row.
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/tensor_checks.h"
#include "kernels/cuda/vector_access.cuh"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kRowThreads = 256;

__global__ void rmsnorm_forward_kernel(const float* x, const float* g, float eps, int64_t d,
                                       float* y, float* rstd) {
  const float* row = x + blockIdx.x * d;
  float sum = 0;
  for (int64_t j = threadIdx.x; j < d; j += kRowThreads) sum += row[j] * row[j];
  const float r = 1.0f / sqrtf(block_sum<kRowThreads>(sum) / static_cast<float>(d) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int64_t j = threadIdx.x; j < d; j += kRowThreads) y[blockIdx.x * d + j] = row[j] * r * g[j];
}

// d is a multiple of 4: each thread takes four columns at a time.
__global__ void rmsnorm_forward4_kernel(const float* x, const float* g, float eps, int64_t d,
                                        float* y, float* rstd) {
  const float* row = x + blockIdx.x * d;
  float sum = 0;
  for (int64_t j = 4 * threadIdx.x; j < d; j += 4 * kRowThreads) {
    const float4 a = load_float4(row + j);
    sum += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
  }
  const float r = 1.0f / sqrtf(block_sum<kRowThreads>(sum) / static_cast<float>(d) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int64_t j = 4 * threadIdx.x; j < d; j += 4 * kRowThreads) {
    const float4 a = load_float4(row + j), w = load_float4(g + j);
    store_float4(y + blockIdx.x * d + j,
                 make_float4(a.x * r * w.x, a.y * r * w.y, a.z * r * w.z, a.w * r * w.w));
  }
}

__global__ void rmsnorm_dgrad_kernel(const float* dy, const float* x, const float* g,
                                     const float* rstd, int64_t d, float* dx) {
  const int64_t base = blockIdx.x * d;
  float dot = 0;
  for (int64_t j = threadIdx.x; j < d; j += kRowThreads) dot += g[j] * dy[base + j] * x[base + j];
  dot = block_sum<kRowThreads>(dot);
  const float r = rstd[blockIdx.x];
  const float c = r * r * r * dot / static_cast<float>(d);
  for (int64_t j = threadIdx.x; j < d; j += kRowThreads)
    dx[base + j] = r * g[j] * dy[base + j] - x[base + j] * c;
}

__global__ void rmsnorm_dgrad4_kernel(const float* dy, const float* x, const float* g,
                                      const float* rstd, int64_t d, float* dx) {
  const int64_t base = blockIdx.x * d;
  float dot = 0;
  for (int64_t j = 4 * threadIdx.x; j < d; j += 4 * kRowThreads) {
    const float4 w = load_float4(g + j), e = load_float4(dy + base + j),
                 a = load_float4(x + base + j);
    dot += w.x * e.x * a.x + w.y * e.y * a.y + w.z * e.z * a.z + w.w * e.w * a.w;
  }
  dot = block_sum<kRowThreads>(dot);
  const float r = rstd[blockIdx.x];
  const float c = r * r * r * dot / static_cast<float>(d);
  for (int64_t j = 4 * threadIdx.x; j < d; j += 4 * kRowThreads) {
    const float4 w = load_float4(g + j), e = load_float4(dy + base + j),
                 a = load_float4(x + base + j);
    store_float4(dx + base + j, make_float4(r * w.x * e.x - a.x * c, r * w.y * e.y - a.y * c,
                                            r * w.z * e.z - a.z * c, r * w.w * e.w - a.w * c));
  }
}

// dg[j] += Σ_n dy[n, j]·x[n, j]·rstd[n]: the CPU reference accumulates into dg too.
__global__ void rmsnorm_wgrad_kernel(const float* dy, const float* x, const float* rstd, int64_t n,
                                     int64_t d, float* dg) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += dy[i * d + j] * x[i * d + j] * rstd[i];
  dg[j] += sum;
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& g, double eps, Tensor& y, Tensor& rstd) {
  require_fp32({&x, &g, &y, &rstd}, "rmsnorm_forward");
  const int64_t n = x.dim(0), d = x.dim(1);
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(x.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
  const auto kernel = d % 4 == 0 && aligned_16(x.data<float>(), g.data<float>(), y.data<float>())
                          ? rmsnorm_forward4_kernel
                          : rmsnorm_forward_kernel;
  kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(x.data<float>(), g.data<float>(),
                                                               static_cast<float>(eps), d,
                                                               y.data<float>(), rstd.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void rmsnorm_dgrad(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& rstd,
                   Tensor& dx) {
  require_fp32({&dy, &x, &g, &rstd, &dx}, "rmsnorm_dgrad");
  const int64_t n = x.dim(0), d = x.dim(1);
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(x.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
  const auto kernel =
      d % 4 == 0 && aligned_16(dy.data<float>(), x.data<float>(), g.data<float>(), dx.data<float>())
          ? rmsnorm_dgrad4_kernel
          : rmsnorm_dgrad_kernel;
  kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
      dy.data<float>(), x.data<float>(), g.data<float>(), rstd.data<float>(), d, dx.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void rmsnorm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dg) {
  require_fp32({&dy, &x, &rstd, &dg}, "rmsnorm_wgrad");
  const int64_t n = x.dim(0), d = x.dim(1);
  if (d == 0) return;
  tandem::cuda::DeviceGuard guard(x.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
  constexpr int kThreads = 256;
  rmsnorm_wgrad_kernel<<<static_cast<unsigned>((d + kThreads - 1) / kThreads), kThreads, 0,
                         stream>>>(dy.data<float>(), x.data<float>(), rstd.data<float>(), n, d,
                                   dg.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
