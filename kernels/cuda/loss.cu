// Cross-entropy on the GPU: one thread block per row (the row's max and sum of exponentials as
// block reductions), its loss written per row and added on the host in double in row order;
// the gradient written in the same kernel, after every read of the row (it may alias it).
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void cross_entropy_kernel(const float* logits, const int32_t* targets, int64_t v,
                                     float grad_scale, double* row_loss, float* dlogits) {
  const int64_t row = blockIdx.x;
  const float* z = logits + row * v;
  float best = -INFINITY;
  for (int64_t c = threadIdx.x; c < v; c += kThreads) best = fmaxf(best, z[c]);
  const float max_logit = block_max<kThreads>(best);
  float sum = 0;
  for (int64_t c = threadIdx.x; c < v; c += kThreads) sum += expf(z[c] - max_logit);
  const float log_sum = logf(block_sum<kThreads>(sum)) + max_logit;
  const int32_t target = targets[row];
  if (threadIdx.x == 0) row_loss[row] = static_cast<double>(log_sum - z[target]);
  if (dlogits == nullptr) return;
  __syncthreads();  // z[target] is read before the gradient may overwrite it
  float* dz = dlogits + row * v;
  for (int64_t c = threadIdx.x; c < v; c += kThreads) dz[c] = expf(z[c] - log_sum) * grad_scale;
  __syncthreads();
  if (threadIdx.x == 0) dz[target] -= grad_scale;
}

}  // namespace

double cross_entropy(const Tensor& logits, const Tensor& targets, double grad_scale,
                     Tensor* dlogits) {
  require_fp32({&logits}, "cross_entropy");
  if (dlogits) require_fp32({dlogits}, "cross_entropy");
  const int64_t n = logits.dim(0), v = logits.dim(1);
  const Tensor host_targets = targets.to(Device::cpu());
  const int32_t* tg = host_targets.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TANDEM_CHECK(tg[i] >= 0 && tg[i] < v, "target ", tg[i], " at row ", i,
                 " is outside the vocabulary [0, ", v, ")");
  if (n == 0) return 0;
  Tensor row_loss = Tensor::empty({n}, DType::kF64, logits.device());
  {
    tandem::cuda::DeviceGuard guard(logits.device().index);
    const cudaStream_t stream = tandem::cuda::compute_stream(logits.device().index).handle();
    cross_entropy_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        logits.data<float>(), targets.data<int32_t>(), v, static_cast<float>(grad_scale),
        row_loss.data<double>(), dlogits ? dlogits->data<float>() : nullptr);
    TANDEM_CHECK_CUDA(cudaGetLastError());
  }
  const Tensor host = row_loss.to(Device::cpu());  // waits for the kernel
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += host.data<double>()[i];
  return total;
}

}  // namespace tandem::kernels::cuda
