// Token permutation on the GPU: one thread block per output row (a gather) or per token (the
// sums over its k slots, in slot order as the CPU reference adds them), the threads across the
// row's columns. The plan itself is built on the host: its per-expert row counts size the expert
// GEMMs and the all-to-all there.
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/permute.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 128;

// Rows move as 16-, 4- or 1-byte words, the widest that divides the row size and both tensors'
// addresses.
template <class Word>
__global__ void gather_rows_kernel(const Word* src, const int64_t* index, int64_t words_per_row,
                                   Word* dst) {
  const int64_t row = blockIdx.x;
  const Word* from = src + index[row] * words_per_row;
  Word* to = dst + row * words_per_row;
  for (int64_t w = threadIdx.x; w < words_per_row; w += kThreads) to[w] = from[w];
}

__global__ void permute_backward_kernel(const float* dxp, const int64_t* row_of_slot, int64_t k,
                                        int64_t d, float* dx) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += dxp[row_of_slot[t * k + j] * d + c];
    dx[t * d + c] = sum;
  }
}

__global__ void unpermute_kernel(const float* yp, const float* w, const int64_t* row_of_slot,
                                 int64_t k, int64_t d, float* y) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += w[t * k + j] * yp[row_of_slot[t * k + j] * d + c];
    y[t * d + c] = sum;
  }
}

__global__ void unpermute_backward_kernel(const float* dy, const float* yp, const float* w,
                                          const int64_t* row_of_slot, int64_t k, int64_t d,
                                          float* dyp, float* dw) {
  const int64_t t = blockIdx.x;
  for (int64_t j = 0; j < k; ++j) {
    const int64_t row = row_of_slot[t * k + j];
    const float wj = w[t * k + j];
    float dot = 0;
    for (int64_t c = threadIdx.x; c < d; c += kThreads) {
      dyp[row * d + c] = wj * dy[t * d + c];
      dot += dy[t * d + c] * yp[row * d + c];
    }
    dot = block_sum<kThreads>(dot);
    if (threadIdx.x == 0) dw[t * k + j] = dot;
  }
}

cudaStream_t stream_of(const Tensor& t) {
  return tandem::cuda::compute_stream(t.device().index).handle();
}

void require_device_plan(const PermutePlan& plan, const char* kernel) {
  TANDEM_CHECK(plan.row_of_slot_on_device.defined() && plan.token_of_row_on_device.defined(),
               kernel, " on CUDA needs a plan made from expert ids on the device");
}

}  // namespace

void gather_rows(const Tensor& src, const Tensor& index, Tensor& dst) {
  const int64_t rows = index.numel();
  if (rows == 0) return;
  const size_t row_bytes = dst.nbytes() / rows;
  tandem::cuda::DeviceGuard guard(dst.device().index);
  const auto launch = [&](auto word) {
    using Word = decltype(word);
    gather_rows_kernel<Word><<<static_cast<unsigned>(rows), kThreads, 0, stream_of(dst)>>>(
        static_cast<const Word*>(src.raw_data()), index.data<int64_t>(),
        static_cast<int64_t>(row_bytes / sizeof(Word)), static_cast<Word*>(dst.raw_data()));
  };
  const uintptr_t bits = reinterpret_cast<uintptr_t>(src.raw_data()) |
                         reinterpret_cast<uintptr_t>(dst.raw_data()) | row_bytes;
  if (bits % sizeof(uint4) == 0)
    launch(uint4{});
  else if (bits % sizeof(uint32_t) == 0)
    launch(uint32_t{});
  else
    launch(uint8_t{});
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void permute_rows_backward(const Tensor& dxp, const PermutePlan& plan, Tensor& dx) {
  require_fp32({&dxp, &dx}, "permute_rows_backward");
  require_device_plan(plan, "permute_rows_backward");
  if (plan.n_tokens == 0) return;
  tandem::cuda::DeviceGuard guard(dx.device().index);
  permute_backward_kernel<<<static_cast<unsigned>(plan.n_tokens), kThreads, 0, stream_of(dx)>>>(
      dxp.data<float>(), plan.row_of_slot_on_device.data<int64_t>(), plan.top_k, dx.dim(1),
      dx.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void unpermute_weighted(const Tensor& yp, const Tensor& gate_weights, const PermutePlan& plan,
                        Tensor& y) {
  require_fp32({&yp, &gate_weights, &y}, "unpermute_weighted");
  require_device_plan(plan, "unpermute_weighted");
  if (plan.n_tokens == 0) return;
  tandem::cuda::DeviceGuard guard(y.device().index);
  unpermute_kernel<<<static_cast<unsigned>(plan.n_tokens), kThreads, 0, stream_of(y)>>>(
      yp.data<float>(), gate_weights.data<float>(), plan.row_of_slot_on_device.data<int64_t>(),
      plan.top_k, y.dim(1), y.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void unpermute_weighted_backward(const Tensor& dy, const Tensor& yp, const Tensor& gate_weights,
                                 const PermutePlan& plan, Tensor& dyp, Tensor& dgate_weights) {
  require_fp32({&dy, &yp, &gate_weights, &dyp, &dgate_weights}, "unpermute_weighted_backward");
  require_device_plan(plan, "unpermute_weighted_backward");
  if (plan.n_tokens == 0) return;
  tandem::cuda::DeviceGuard guard(dy.device().index);
  unpermute_backward_kernel<<<static_cast<unsigned>(plan.n_tokens), kThreads, 0, stream_of(dy)>>>(
      dy.data<float>(), yp.data<float>(), gate_weights.data<float>(),
      plan.row_of_slot_on_device.data<int64_t>(), plan.top_k, dy.dim(1), dyp.data<float>(),
      dgate_weights.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
