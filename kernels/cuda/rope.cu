// RoPE on the GPU: one thread per rotated channel pair (row, q or k, head, pair), reading the
// table the host computed in double and rounded to fp32 as the CPU does. Both compilers fuse
// a·c − b·s into a multiply-add, each its own way: results agree to fp32 rounding.
#include <vector>

#include "kernels/cuda/rope.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(float* qkv, int64_t rows, int64_t seq_len, int64_t n_heads,
                            int64_t half, const float* cos_table, const float* sin_table) {
  const int64_t pairs_per_row = 2 * n_heads * half, d = n_heads * 2 * half;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       e < rows * pairs_per_row; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / pairs_per_row, within = e % pairs_per_row;
    const int64_t part = within / (n_heads * half), h = (within / half) % n_heads,
                  i = within % half;
    float* v = qkv + r * 3 * d + part * d + h * 2 * half;
    const int64_t at = (r % seq_len) * half + i;
    const float c = cos_table[at], s = sin_table[at];
    const float a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = a * c - b * s;
    v[2 * i + 1] = a * s + b * c;
  }
}

Tensor device_table(const std::vector<double>& values, Device device) {
  Tensor host = Tensor::empty({static_cast<int64_t>(values.size())}, DType::kF32);
  for (size_t i = 0; i < values.size(); ++i) host.data<float>()[i] = static_cast<float>(values[i]);
  return host.to(device);
}

}  // namespace

void rope_apply(Tensor& qkv, int64_t seq_len, int64_t n_heads, const RopeTable& table) {
  require_fp32({&qkv}, "rope_apply");
  const int64_t rows = qkv.dim(0), half = qkv.dim(1) / 3 / n_heads / 2;
  const int64_t pairs = rows * 2 * n_heads * half;
  if (pairs == 0) return;
  const Tensor cos_table = device_table(table.cos, qkv.device());
  const Tensor sin_table = device_table(table.sin, qkv.device());
  tandem::cuda::DeviceGuard guard(qkv.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(qkv.device().index).handle();
  const int64_t blocks = (pairs + kThreads - 1) / kThreads;
  rope_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(
      qkv.data<float>(), rows, seq_len, n_heads, half, cos_table.data<float>(),
      sin_table.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
