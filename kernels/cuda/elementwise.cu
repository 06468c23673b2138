// Residual adds, scaling, the sum of squares (the gradient norm's), fp32 <-> bf16 conversion and
// 2-D transposes on the GPU: grid-stride loops, over packs of four (16-byte accesses) where the
// pointers and lengths allow; the sum of squares as one double partial per block, added on the
// host in block order.
#include <vector>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/tensor_checks.h"
#include "kernels/cuda/vector_access.cuh"
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

__global__ void axpy4_kernel(float alpha, const float* x, float* y, int64_t packs) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 a = load_float4(x + 4 * i);
    float4 b = load_float4(y + 4 * i);
    b.x += alpha * a.x, b.y += alpha * a.y, b.z += alpha * a.z, b.w += alpha * a.w;
    store_float4(y + 4 * i, b);
  }
}

__global__ void scale4_kernel(float* x, float alpha, int64_t packs) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float4 a = load_float4(x + 4 * i);
    a.x *= alpha, a.y *= alpha, a.z *= alpha, a.w *= alpha;
    store_float4(x + 4 * i, a);
  }
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

__global__ void sum_of_squares4_kernel(const float* x, int64_t packs, double* partials) {
  double sum = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 a = load_float4(x + 4 * i);
    sum += static_cast<double>(a.x) * a.x;
    sum += static_cast<double>(a.y) * a.y;
    sum += static_cast<double>(a.z) * a.z;
    sum += static_cast<double>(a.w) * a.w;
  }
  sum = block_sum<kThreads>(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// The CPU's to_bf16 on the bits: round to nearest even, NaN kept a (quiet) NaN.
__device__ inline uint16_t bf16_of(float value) {
  uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

__device__ inline float float_of_bf16(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

__global__ void to_bf16_kernel(const float* in, int64_t n, uint16_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = bf16_of(in[i]);
}

// Four values per thread: 16 bytes in, 8 out.
__global__ void to_bf16_4_kernel(const float* in, int64_t packs, uint16_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 a = load_float4(in + 4 * i);
    *reinterpret_cast<ushort4*>(out + 4 * i) =
        make_ushort4(bf16_of(a.x), bf16_of(a.y), bf16_of(a.z), bf16_of(a.w));
  }
}

__global__ void from_bf16_kernel(const uint16_t* in, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = float_of_bf16(in[i]);
}

__global__ void from_bf16_4_kernel(const uint16_t* in, int64_t packs, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const ushort4 b = *reinterpret_cast<const ushort4*>(in + 4 * i);
    store_float4(out + 4 * i, make_float4(float_of_bf16(b.x), float_of_bf16(b.y),
                                          float_of_bf16(b.z), float_of_bf16(b.w)));
  }
}

// out[c, r] = in[r, c], a 32×32 tile per block through shared memory so that both the reads and
// the writes are coalesced.
template <class T>
__global__ void transpose_kernel(const T* in, int64_t rows, int64_t cols, T* out) {
  __shared__ T tile[32][33];
  // Row tiles on gridDim.x (up to 2^31 - 1), column tiles on gridDim.y (up to 65535).
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * 32,
                c0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t r = r0 + y, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[y][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t c = c0 + y, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][y];
  }
}

cudaStream_t stream_on(const Tensor& t) {
  return tandem::cuda::compute_stream(t.device().index).handle();
}

}  // namespace

void convert(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(dst.device().index);
  const bool packed = n % 4 == 0 && aligned_16(src.raw_data(), dst.raw_data());
  if (src.dtype() == DType::kF32 && dst.dtype() == DType::kBF16) {
    const float* in = src.data<float>();
    auto* out = static_cast<uint16_t*>(dst.raw_data());
    if (packed)
      to_bf16_4_kernel<<<blocks_for(n / 4), kThreads, 0, stream_on(dst)>>>(in, n / 4, out);
    else
      to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream_on(dst)>>>(in, n, out);
  } else if (src.dtype() == DType::kBF16 && dst.dtype() == DType::kF32) {
    const auto* in = static_cast<const uint16_t*>(src.raw_data());
    float* out = dst.data<float>();
    if (packed)
      from_bf16_4_kernel<<<blocks_for(n / 4), kThreads, 0, stream_on(dst)>>>(in, n / 4, out);
    else
      from_bf16_kernel<<<blocks_for(n), kThreads, 0, stream_on(dst)>>>(in, n, out);
  } else {
    TANDEM_FAIL("convert on CUDA from ", dtype_name(src.dtype()), " to ", dtype_name(dst.dtype()),
                " is not supported (fp32 <-> bf16)");
  }
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void transpose(const Tensor& src, Tensor& dst) {
  TANDEM_CHECK(src.ndim() == 2 && dst.ndim() == 2 && dst.dim(0) == src.dim(1) &&
                   dst.dim(1) == src.dim(0) && src.dtype() == dst.dtype(),
               "transpose of ", shape_string(src.shape()), " into ", shape_string(dst.shape()));
  const int64_t rows = src.dim(0), cols = src.dim(1);
  if (rows == 0 || cols == 0) return;
  tandem::cuda::DeviceGuard guard(dst.device().index);
  TANDEM_CHECK((cols + 31) / 32 <= 65535, "transpose on CUDA: ", cols,
               " columns exceed 65535 tiles of 32");
  const dim3 grid(static_cast<unsigned>((rows + 31) / 32), static_cast<unsigned>((cols + 31) / 32));
  const dim3 threads(32, 8);
  const size_t element = dtype_size(src.dtype());
  if (element == 1) {
    transpose_kernel<<<grid, threads, 0, stream_on(dst)>>>(
        static_cast<const uint8_t*>(src.raw_data()), rows, cols,
        static_cast<uint8_t*>(dst.raw_data()));
  } else if (element == 4) {
    transpose_kernel<<<grid, threads, 0, stream_on(dst)>>>(
        static_cast<const uint32_t*>(src.raw_data()), rows, cols,
        static_cast<uint32_t*>(dst.raw_data()));
  } else {
    TANDEM_FAIL("transpose on CUDA takes 1- or 4-byte elements, got ", dtype_name(src.dtype()));
  }
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  require_fp32({&x, &y}, "axpy");
  const int64_t n = x.numel();
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(y.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(y.device().index).handle();
  const float a = static_cast<float>(alpha);
  if (n % 4 == 0 && aligned_16(x.data<float>(), y.data<float>()))
    axpy4_kernel<<<blocks_for(n / 4), kThreads, 0, stream>>>(a, x.data<float>(), y.data<float>(),
                                                             n / 4);
  else
    axpy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(a, x.data<float>(), y.data<float>(), n);
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void scale(Tensor& x, double alpha) {
  require_fp32({&x}, "scale");
  const int64_t n = x.numel();
  if (n == 0) return;
  tandem::cuda::DeviceGuard guard(x.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
  const float a = static_cast<float>(alpha);
  if (n % 4 == 0 && aligned_16(x.data<float>()))
    scale4_kernel<<<blocks_for(n / 4), kThreads, 0, stream>>>(x.data<float>(), a, n / 4);
  else
    scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x.data<float>(), a, n);
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

double sum_of_squares(const std::vector<const Tensor*>& tensors) {
  if (tensors.empty()) return 0;
  const Device device = tensors.front()->device();
  std::vector<unsigned> blocks;
  std::vector<bool> packed;
  int64_t total_blocks = 0;
  for (const Tensor* x : tensors) {
    require_fp32({x}, "sum_of_squares");
    const int64_t n = x->numel();
    packed.push_back(n % 4 == 0 && aligned_16(x->data<float>()));
    blocks.push_back(n == 0 ? 0 : blocks_for(packed.back() ? n / 4 : n));
    total_blocks += blocks.back();
  }
  if (total_blocks == 0) return 0;
  Tensor partials = Tensor::empty({total_blocks}, DType::kF64, device);
  {
    tandem::cuda::DeviceGuard guard(device.index);
    const cudaStream_t stream = tandem::cuda::compute_stream(device.index).handle();
    int64_t offset = 0;
    for (size_t t = 0; t < tensors.size(); offset += blocks[t], ++t) {
      if (blocks[t] == 0) continue;
      const float* x = tensors[t]->data<float>();
      const int64_t n = tensors[t]->numel();
      double* out = partials.data<double>() + offset;
      if (packed[t])
        sum_of_squares4_kernel<<<blocks[t], kThreads, 0, stream>>>(x, n / 4, out);
      else
        sum_of_squares_kernel<<<blocks[t], kThreads, 0, stream>>>(x, n, out);
      TANDEM_CHECK_CUDA(cudaGetLastError());
    }
  }
  const Tensor host = partials.to(Device::cpu());  // the one wait, for every kernel
  // Each tensor's partials in block order, then the tensors in order: what summing the
  // per-tensor results would give.
  double total = 0;
  const double* partial = host.data<double>();
  for (const unsigned count : blocks) {
    double sum = 0;
    for (unsigned b = 0; b < count; ++b) sum += *partial++;
    total += sum;
  }
  return total;
}

}  // namespace tandem::kernels::cuda
