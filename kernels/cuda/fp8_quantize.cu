// FP8 block scaling on the GPU: amax and encoding in one kernel per tile or block (the CPU's two
// passes over a tile are one read of it here), 16-byte loads where the row allows, scales written
// by one lane. Every value is encoded with kernels/fp8_arith.h's operations, as on the CPU.
#include <cstdint>
#include <vector>

#include "kernels/cuda/fp8_quantize.h"
#include "kernels/fp8_arith.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kTileWarps = 4;   // tiles per thread block of the 1×128 kernel
constexpr int kBlockWarps = 8;  // warps sharing one 128×128 block

struct Encoder {
  Fp8Codec codec;
  uint32_t on_overflow;
  bool power_of_two;
};

Encoder encoder_for(const QuantizeOptions& options) {
  const Fp8Codec& codec = options.format == Fp8Format::kE4M3 ? kFp8CodecE4M3 : kFp8CodecE5M2;
  return {codec, options.saturate ? codec.max_code : codec.overflow_code,
          options.power_of_two_scales};
}

__device__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ uint32_t warp_sum(uint32_t v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One lane's up-to-4 values of a 128-wide row segment: columns 4·lane..4·lane+3 when loaded as
// one float4 (the row is 16-byte aligned and a multiple of 4 wide), else lane + 32·j.
struct LaneValues {
  float v[4];
  int col[4];
  int n = 0;
};

__device__ LaneValues load_segment(const float* src, int width, bool vector4, int lane) {
  LaneValues out;
  if (vector4) {
    if (4 * lane < width) {
      const float4 q = *reinterpret_cast<const float4*>(src + 4 * lane);
      out.v[0] = q.x, out.v[1] = q.y, out.v[2] = q.z, out.v[3] = q.w;
      for (int j = 0; j < 4; ++j) out.col[j] = 4 * lane + j;
      out.n = 4;
    }
  } else {
    for (int j = 0; j < 4; ++j) {
      const int c = lane + kWarp * j;
      if (c < width) {
        out.v[out.n] = src[c];
        out.col[out.n] = c;
        ++out.n;
      }
    }
  }
  return out;
}

__device__ float segment_amax(const LaneValues& values) {
  float amax = 0;
  for (int j = 0; j < values.n; ++j) amax = fmaxf(amax, finite_magnitude(values.v[j]));
  return amax;
}

// Encodes the lane's values into dst (the segment's first code); returns how many saturated.
__device__ uint32_t encode_segment(const LaneValues& values, float multiplier, const Encoder& e,
                                   bool vector4, uint8_t* dst) {
  uint32_t saturated = 0, packed = 0;
  uint8_t codes[4];
  for (int j = 0; j < values.n; ++j) {
    uint32_t overflowed = 0;
    codes[j] = fp8_encode_one(values.v[j] * multiplier, e.codec, e.on_overflow, overflowed);
    saturated += overflowed;
    packed |= static_cast<uint32_t>(codes[j]) << (8 * j);
  }
  if (vector4 && values.n == 4)
    *reinterpret_cast<uint32_t*>(dst + values.col[0]) = packed;
  else
    for (int j = 0; j < values.n; ++j) dst[values.col[j]] = codes[j];
  return saturated;
}

// One warp per 1×128 tile: [rows, cols] → codes [rows, cols], scales [rows, ⌈cols/128⌉].
__global__ void quantize_tiles_kernel(const float* __restrict__ x, int64_t rows, int64_t cols,
                                      Encoder encoder, bool vector4, uint8_t* __restrict__ codes,
                                      float* __restrict__ scales, uint8_t* nonempty,
                                      unsigned long long* saturated) {
  const int lane = threadIdx.x % kWarp;
  const int64_t col_blocks = (cols + kFp8Block - 1) / kFp8Block;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kTileWarps + threadIdx.x / kWarp;
  if (tile >= rows * col_blocks) return;  // the whole warp
  const int64_t r = tile / col_blocks, c0 = (tile % col_blocks) * kFp8Block;
  const int width = static_cast<int>(min(static_cast<int64_t>(kFp8Block), cols - c0));
  const LaneValues values = load_segment(x + r * cols + c0, width, vector4, lane);
  const float amax = warp_max(segment_amax(values));
  const float scale = fp8_block_scale(amax, encoder.codec.max_value, encoder.power_of_two);
  const uint32_t clamped =
      warp_sum(encode_segment(values, 1.0f / scale, encoder, vector4, codes + r * cols + c0));
  if (lane == 0) {
    scales[tile] = scale;
    if (nonempty) nonempty[tile] = amax > 0;
    if (saturated && clamped) atomicAdd(saturated, static_cast<unsigned long long>(clamped));
  }
}

// One thread block of 8 warps per 128×128 block: the warps share the amax, then each encodes its
// rows (read again: the block is in L2).
__global__ void quantize_blocks_kernel(const float* __restrict__ x, int64_t rows, int64_t cols,
                                       Encoder encoder, bool vector4, uint8_t* __restrict__ codes,
                                       float* __restrict__ scales, uint8_t* nonempty,
                                       unsigned long long* saturated) {
  __shared__ float warp_amax[kBlockWarps];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kFp8Block;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kFp8Block;
  const int64_t r1 = min(rows, r0 + kFp8Block);
  const int width = static_cast<int>(min(static_cast<int64_t>(kFp8Block), cols - c0));
  float amax = 0;
  for (int64_t r = r0 + warp; r < r1; r += kBlockWarps)
    amax = fmaxf(amax, segment_amax(load_segment(x + r * cols + c0, width, vector4, lane)));
  amax = warp_max(amax);
  if (lane == 0) warp_amax[warp] = amax;
  __syncthreads();
  amax = 0;
  for (int w = 0; w < kBlockWarps; ++w) amax = fmaxf(amax, warp_amax[w]);
  const float scale = fp8_block_scale(amax, encoder.codec.max_value, encoder.power_of_two);
  const float multiplier = 1.0f / scale;
  uint32_t clamped = 0;
  for (int64_t r = r0 + warp; r < r1; r += kBlockWarps)
    clamped += encode_segment(load_segment(x + r * cols + c0, width, vector4, lane), multiplier,
                              encoder, vector4, codes + r * cols + c0);
  clamped = warp_sum(clamped);
  const int64_t index = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) {
    scales[index] = scale;
    if (nonempty) nonempty[index] = amax > 0;
  }
  if (lane == 0 && saturated && clamped)
    atomicAdd(saturated, static_cast<unsigned long long>(clamped));
}

// out[c, r] = in[r, c] through a 32×33 shared tile (the pad keeps the column reads off one bank).
__global__ void transpose_kernel(const float* __restrict__ in, int64_t rows, int64_t cols,
                                 float* __restrict__ out) {
  __shared__ float tile[kWarp][kWarp + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kWarp;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kWarp;
  for (int i = threadIdx.y; i < kWarp; i += blockDim.y)
    if (r0 + i < rows && c0 + threadIdx.x < cols)
      tile[i][threadIdx.x] = in[(r0 + i) * cols + c0 + threadIdx.x];
  __syncthreads();
  for (int i = threadIdx.y; i < kWarp; i += blockDim.y)
    if (c0 + i < cols && r0 + threadIdx.x < rows)
      out[(c0 + i) * rows + r0 + threadIdx.x] = tile[threadIdx.x][i];
}

struct DecodeTable {
  float values[256];
};

// value = decode(code) · scale of its tile or block, as the CPU's dequantize.
__global__ void dequantize_kernel(const uint8_t* __restrict__ codes,
                                  const float* __restrict__ scales, int64_t rows, int64_t cols,
                                  bool tiles, DecodeTable table, float* __restrict__ out) {
  const int64_t col_blocks = (cols + kFp8Block - 1) / kFp8Block;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const int64_t scale_row = tiles ? r : r / kFp8Block;
    out[i] = table.values[codes[i]] * scales[scale_row * col_blocks + c / kFp8Block];
  }
}

// A dispatch payload row: the row's `cols` codes, then the bytes of its scales (scale_bytes of
// them, at whatever alignment cols leaves). One thread per payload byte, in either direction.
__global__ void pack_rows_kernel(const uint8_t* __restrict__ codes,
                                 const uint8_t* __restrict__ scales, int64_t rows, int64_t cols,
                                 int64_t scale_bytes, uint8_t* __restrict__ payload) {
  const int64_t width = cols + scale_bytes;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, b = i % width;
    payload[i] = b < cols ? codes[r * cols + b] : scales[r * scale_bytes + (b - cols)];
  }
}

__global__ void unpack_rows_kernel(const uint8_t* __restrict__ payload, int64_t rows, int64_t cols,
                                   int64_t scale_bytes, uint8_t* __restrict__ codes,
                                   uint8_t* __restrict__ scales) {
  const int64_t width = cols + scale_bytes;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, b = i % width;
    if (b < cols)
      codes[r * cols + b] = payload[i];
    else
      scales[r * scale_bytes + (b - cols)] = payload[i];
  }
}

unsigned byte_grid(int64_t bytes) {
  return static_cast<unsigned>(std::min<int64_t>((bytes + 255) / 256, 65535));
}

int64_t blocks_of(int64_t extent) {
  return (extent + kFp8Block - 1) / kFp8Block;
}

void check_on_cuda(const Tensor& t, const char* what) {
  TANDEM_CHECK(t.device().type == DeviceType::kCUDA, what, " is on ", t.device().to_string(),
               ", expected a CUDA device");
}

// Statistics as the CPU gathers them: every value, the clamped ones, and the scales of blocks that
// held a non-zero finite value. Reading them back waits for the stream.
void gather_stats(Fp8Stats* stats, int64_t values, const Tensor& scales,
                  const Tensor& nonempty_flags, const Tensor& saturated) {
  const Tensor host_scales = scales.to(Device::cpu());
  const Tensor host_flags = nonempty_flags.to(Device::cpu());
  const Tensor host_saturated = saturated.to(Device::cpu());
  stats->values += values;
  stats->saturated += host_saturated.data<int64_t>()[0];
  for (int64_t i = 0; i < host_scales.numel(); ++i)
    if (host_flags.data<uint8_t>()[i]) stats->add_scale(host_scales.data<float>()[i]);
}

}  // namespace

BlockScaledFp8 quantize(const Tensor& x, ScaleGranularity granularity,
                        const QuantizeOptions& options, Fp8Stats* stats) {
  check_on_cuda(x, "fp8 quantize input");
  check_dtype(x, DType::kF32, "fp8 quantize input");
  TANDEM_CHECK(x.ndim() == 2, "fp8 quantize needs a matrix, got ", shape_string(x.shape()));
  const Device device = x.device();
  const int64_t rows = x.dim(0), cols = x.dim(1);
  const bool tiles = granularity == ScaleGranularity::kTile1x128;
  BlockScaledFp8 q;
  q.granularity = granularity;
  q.format = options.format;
  q.codes = Tensor::empty({rows, cols}, dtype_of(options.format), device);
  q.scales = Tensor::empty({tiles ? rows : blocks_of(rows), blocks_of(cols)}, DType::kF32, device);
  if (rows == 0 || cols == 0) return q;
  Tensor flags, saturated;
  if (stats) {
    flags = Tensor::empty({q.scales.numel()}, DType::kU8, device);
    saturated = Tensor::zeros({1}, DType::kI64, device);
  }
  const auto* in = x.data<float>();
  const bool vector4 = cols % 4 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0;
  const Encoder encoder = encoder_for(options);
  auto* codes = static_cast<uint8_t*>(q.codes.raw_data());
  auto* flag_data = stats ? flags.data<uint8_t>() : nullptr;
  auto* counter =
      stats ? reinterpret_cast<unsigned long long*>(saturated.data<int64_t>()) : nullptr;
  tandem::cuda::DeviceGuard guard(device.index);
  const cudaStream_t stream = tandem::cuda::compute_stream(device.index).handle();
  if (tiles) {
    const int64_t count = rows * blocks_of(cols);
    const auto grid = static_cast<unsigned>((count + kTileWarps - 1) / kTileWarps);
    quantize_tiles_kernel<<<grid, kTileWarps * kWarp, 0, stream>>>(
        in, rows, cols, encoder, vector4, codes, q.scales.data<float>(), flag_data, counter);
  } else {
    const dim3 grid(static_cast<unsigned>(blocks_of(cols)), static_cast<unsigned>(blocks_of(rows)));
    quantize_blocks_kernel<<<grid, kBlockWarps * kWarp, 0, stream>>>(
        in, rows, cols, encoder, vector4, codes, q.scales.data<float>(), flag_data, counter);
  }
  TANDEM_CHECK_CUDA(cudaGetLastError());
  if (stats) gather_stats(stats, x.numel(), q.scales, flags, saturated);
  return q;
}

BlockScaledFp8 quantize_transposed(const Tensor& x, const QuantizeOptions& options,
                                   Fp8Stats* stats) {
  check_on_cuda(x, "fp8 quantize input");
  check_dtype(x, DType::kF32, "fp8 quantize input");
  TANDEM_CHECK(x.ndim() == 2, "fp8 quantize needs a matrix, got ", shape_string(x.shape()));
  const int64_t rows = x.dim(0), cols = x.dim(1);
  Tensor t = Tensor::empty({cols, rows}, DType::kF32, x.device());
  if (rows > 0 && cols > 0) {
    tandem::cuda::DeviceGuard guard(x.device().index);
    const cudaStream_t stream = tandem::cuda::compute_stream(x.device().index).handle();
    const dim3 grid(static_cast<unsigned>((cols + kWarp - 1) / kWarp),
                    static_cast<unsigned>((rows + kWarp - 1) / kWarp));
    transpose_kernel<<<grid, dim3(kWarp, 8), 0, stream>>>(x.data<float>(), rows, cols,
                                                          t.data<float>());
    TANDEM_CHECK_CUDA(cudaGetLastError());
  }
  return kernels::cuda::quantize(t, ScaleGranularity::kTile1x128, options, stats);
}

Tensor dequantize(const BlockScaledFp8& q) {
  check_on_cuda(q.codes, "fp8 codes");
  check_on_cuda(q.scales, "fp8 scales");
  const int64_t rows = q.rows(), cols = q.cols();
  Tensor out = Tensor::empty({rows, cols}, DType::kF32, q.codes.device());
  if (rows == 0 || cols == 0) return out;
  DecodeTable table;
  for (int code = 0; code < 256; ++code)
    table.values[code] = fp8_decode(static_cast<uint8_t>(code), q.format);
  tandem::cuda::DeviceGuard guard(q.codes.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(q.codes.device().index).handle();
  const int64_t n = rows * cols, threads = 256;
  const auto grid = static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  dequantize_kernel<<<grid, threads, 0, stream>>>(
      static_cast<const uint8_t*>(q.codes.raw_data()), q.scales.data<float>(), rows, cols,
      q.granularity == ScaleGranularity::kTile1x128, table, out.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  return out;
}

Tensor pack_fp8_rows(const BlockScaledFp8& q) {
  check_on_cuda(q.codes, "fp8 codes");
  const int64_t rows = q.rows(), cols = q.cols(), scale_bytes = blocks_of(cols) * 4;
  Tensor payload = Tensor::empty({rows, cols + scale_bytes}, DType::kU8, q.codes.device());
  if (payload.numel() == 0) return payload;
  tandem::cuda::DeviceGuard guard(q.codes.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(q.codes.device().index).handle();
  pack_rows_kernel<<<byte_grid(payload.numel()), 256, 0, stream>>>(
      static_cast<const uint8_t*>(q.codes.raw_data()),
      static_cast<const uint8_t*>(q.scales.raw_data()), rows, cols, scale_bytes,
      payload.data<uint8_t>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  return payload;
}

BlockScaledFp8 unpack_fp8_rows(const Tensor& payload, int64_t cols, Fp8Format format) {
  check_on_cuda(payload, "fp8 payload");
  const Device device = payload.device();
  const int64_t rows = payload.dim(0), scale_bytes = blocks_of(cols) * 4;
  BlockScaledFp8 q;
  q.format = format;
  q.codes = Tensor::empty({rows, cols}, dtype_of(format), device);
  q.scales = Tensor::empty({rows, blocks_of(cols)}, DType::kF32, device);
  if (payload.numel() == 0) return q;
  tandem::cuda::DeviceGuard guard(device.index);
  const cudaStream_t stream = tandem::cuda::compute_stream(device.index).handle();
  unpack_rows_kernel<<<byte_grid(payload.numel()), 256, 0, stream>>>(
      payload.data<uint8_t>(), rows, cols, scale_bytes, static_cast<uint8_t*>(q.codes.raw_data()),
      static_cast<uint8_t*>(q.scales.raw_data()));
  TANDEM_CHECK_CUDA(cudaGetLastError());
  return q;
}

}  // namespace tandem::kernels::cuda
