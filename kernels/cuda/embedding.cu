// Embedding lookup and its weight gradient on the GPU: the lookup one thread per output element
// (per four, with 16-byte accesses, where the width is a multiple of 4 and the pointers aligned);
// the gradient one thread per column walking the tokens in order (no atomics: repeated ids add
// in a fixed order, the CPU's). Token ids are checked on the host first, with the CPU's message.
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/tensor_checks.h"
#include "kernels/cuda/vector_access.cuh"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void embedding_forward_kernel(const int32_t* ids, const float* table, int64_t n,
                                         int64_t d, float* out) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * d;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[e] = table[static_cast<int64_t>(ids[e / d]) * d + e % d];
}

__global__ void embedding_forward4_kernel(const int32_t* ids, const float* table, int64_t n,
                                          int64_t d, float* out) {
  const int64_t row_packs = d / 4;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * row_packs;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_float4(out + 4 * e, load_float4(table + static_cast<int64_t>(ids[e / row_packs]) * d +
                                          4 * (e % row_packs)));
}

__global__ void embedding_wgrad_kernel(const int32_t* ids, const float* dout, int64_t n, int64_t d,
                                       float* dtable) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  for (int64_t i = 0; i < n; ++i) dtable[static_cast<int64_t>(ids[i]) * d + c] += dout[i * d + c];
}

void check_ids(const Tensor& tokens, int64_t vocab) {
  check_dtype(tokens, DType::kI32, "embedding tokens");
  const Tensor host = tokens.to(Device::cpu());
  const int32_t* ids = host.data<int32_t>();
  for (int64_t i = 0; i < host.numel(); ++i)
    TANDEM_CHECK(ids[i] >= 0 && ids[i] < vocab, "token id ", ids[i], " at position ", i,
                 " is outside the vocabulary [0, ", vocab, ")");
}

}  // namespace

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out) {
  require_fp32({&table, &out}, "embedding_forward");
  const int64_t n = tokens.numel(), d = table.dim(1);
  check_ids(tokens, table.dim(0));
  if (n * d == 0) return;
  tandem::cuda::DeviceGuard guard(out.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(out.device().index).handle();
  const bool packed = d % 4 == 0 && aligned_16(table.data<float>(), out.data<float>());
  const int64_t threads_needed = packed ? n * d / 4 : n * d;
  const int64_t blocks = (threads_needed + kThreads - 1) / kThreads;
  const auto kernel = packed ? embedding_forward4_kernel : embedding_forward_kernel;
  kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(
      tokens.data<int32_t>(), table.data<float>(), n, d, out.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void embedding_wgrad(const Tensor& tokens, const Tensor& dout, Tensor& dtable) {
  require_fp32({&dout, &dtable}, "embedding_wgrad");
  const int64_t n = tokens.numel(), d = dtable.dim(1);
  check_ids(tokens, dtable.dim(0));
  if (n * d == 0) return;
  tandem::cuda::DeviceGuard guard(dtable.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(dtable.device().index).handle();
  embedding_wgrad_kernel<<<static_cast<unsigned>((d + kThreads - 1) / kThreads), kThreads, 0,
                           stream>>>(tokens.data<int32_t>(), dout.data<float>(), n, d,
                                     dtable.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
