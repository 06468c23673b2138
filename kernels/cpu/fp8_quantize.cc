// Block-scaled FP8 tensors: quantisation with online amax scales, dequantisation, the exact block
// transpose, and the packed row format the expert dispatch sends.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/fp8.h"
#include "kernels/fp8_arith.h"
#include "runtime/core/profiler.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/fp8_quantize.h"
#endif

namespace tandem::kernels {

namespace {

int64_t blocks(int64_t extent) {
  return (extent + kFp8Block - 1) / kFp8Block;
}

float block_scale(float amax, const QuantizeOptions& options) {
  return fp8_block_scale(amax, fp8_info(options.format).max_value, options.power_of_two_scales);
}

// Largest finite magnitude; written branch-free (NaN and inf compare false) so that it vectorises.
float finite_amax(const float* x, int64_t n) {
  constexpr float kMaxFinite = std::numeric_limits<float>::max();
  float amax = 0;
#pragma omp simd reduction(max : amax)
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::abs(x[i]);
    amax = std::max(amax, v <= kMaxFinite ? v : 0.0f);
  }
  return amax;
}

// Scale statistics cover blocks that had a non-zero finite value (the others get scale 1).
void record(Fp8Stats* stats, int64_t values, int64_t saturated, const Tensor& scales,
            const std::vector<uint8_t>& nonempty) {
  if (!stats) return;
  stats->values += values;
  stats->saturated += saturated;
  const float* s = scales.data<float>();
  for (int64_t i = 0; i < scales.numel(); ++i)
    if (nonempty[i]) stats->add_scale(s[i]);
}

}  // namespace

void Fp8Stats::add_scale(double scale) {
  min_scale = min_scale == 0 ? scale : std::min(min_scale, scale);
  max_scale = std::max(max_scale, scale);
}

void Fp8Stats::merge(const Fp8Stats& other) {
  values += other.values;
  saturated += other.saturated;
  if (other.min_scale != 0) add_scale(other.min_scale);
  if (other.max_scale != 0) add_scale(other.max_scale);
}

float BlockScaledFp8::scale_at(int64_t row, int64_t col) const {
  const int64_t r = granularity == ScaleGranularity::kTile1x128 ? row : row / kFp8Block;
  return scales.data<float>()[r * scales.dim(1) + col / kFp8Block];
}

BlockScaledFp8 quantize(const Tensor& x, ScaleGranularity granularity,
                        const QuantizeOptions& options, Fp8Stats* stats) {
#ifdef TANDEM_HAVE_CUDA
  if (x.device().type == DeviceType::kCUDA) return cuda::quantize(x, granularity, options, stats);
#endif
  require_cpu({&x}, "fp8 quantize");
  TANDEM_PROFILE_SCOPE("fp8_quantize");
  check_dtype(x, DType::kF32, "fp8 quantize input");
  TANDEM_CHECK(x.ndim() == 2, "fp8 quantize needs a matrix, got ", shape_string(x.shape()));
  const int64_t rows = x.dim(0), cols = x.dim(1), col_blocks = blocks(cols);
  BlockScaledFp8 q;
  q.granularity = granularity;
  q.format = options.format;
  q.codes = Tensor::empty({rows, cols}, dtype_of(options.format));
  const bool tiles = granularity == ScaleGranularity::kTile1x128;
  q.scales = Tensor::empty({tiles ? rows : blocks(rows), col_blocks}, DType::kF32);
  const float* in = x.data<float>();
  auto* codes = static_cast<uint8_t*>(q.codes.raw_data());
  float* scales = q.scales.data<float>();
  std::vector<uint8_t> nonempty(q.scales.numel());
  int64_t saturated = 0;
  if (tiles) {
#pragma omp parallel for schedule(static) reduction(+ : saturated)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t cb = 0; cb < col_blocks; ++cb) {
        const int64_t c0 = cb * kFp8Block, width = std::min(kFp8Block, cols - c0);
        const float* src = in + r * cols + c0;
        const float amax = finite_amax(src, width);
        const float scale = block_scale(amax, options);
        scales[r * col_blocks + cb] = scale;
        nonempty[r * col_blocks + cb] = amax > 0;
        saturated += fp8_encode_n(src, 1.0f / scale, codes + r * cols + c0, width, options.format,
                                  options.saturate);
      }
  } else {
    const int64_t row_blocks = blocks(rows);
#pragma omp parallel for schedule(static) collapse(2) reduction(+ : saturated)
    for (int64_t rb = 0; rb < row_blocks; ++rb)
      for (int64_t cb = 0; cb < col_blocks; ++cb) {
        const int64_t r0 = rb * kFp8Block, r1 = std::min(rows, r0 + kFp8Block);
        const int64_t c0 = cb * kFp8Block, width = std::min(kFp8Block, cols - c0);
        float amax = 0;
        for (int64_t r = r0; r < r1; ++r)
          amax = std::max(amax, finite_amax(in + r * cols + c0, width));
        const float scale = block_scale(amax, options);
        scales[rb * col_blocks + cb] = scale;
        nonempty[rb * col_blocks + cb] = amax > 0;
        for (int64_t r = r0; r < r1; ++r)
          saturated += fp8_encode_n(in + r * cols + c0, 1.0f / scale, codes + r * cols + c0, width,
                                    options.format, options.saturate);
      }
  }
  record(stats, x.numel(), saturated, q.scales, nonempty);
  return q;
}

BlockScaledFp8 quantize_transposed(const Tensor& x, const QuantizeOptions& options,
                                   Fp8Stats* stats) {
#ifdef TANDEM_HAVE_CUDA
  if (x.device().type == DeviceType::kCUDA) return cuda::quantize_transposed(x, options, stats);
#endif
  require_cpu({&x}, "fp8 quantize_transposed");
  check_dtype(x, DType::kF32, "fp8 quantize input");
  const int64_t rows = x.dim(0), cols = x.dim(1);
  Tensor t = Tensor::empty({cols, rows}, DType::kF32);
  const float* in = x.data<float>();
  float* out = t.data<float>();
  {
    TANDEM_PROFILE_SCOPE("fp8_transpose");
    constexpr int64_t kTile = 32;
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t r0 = 0; r0 < rows; r0 += kTile)
      for (int64_t c0 = 0; c0 < cols; c0 += kTile)
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
          for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c)
            out[c * rows + r] = in[r * cols + c];
  }
  return quantize(t, ScaleGranularity::kTile1x128, options, stats);
}

Tensor dequantize(const BlockScaledFp8& q) {
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&q.codes, &q.scales}, "fp8 dequantize").type == DeviceType::kCUDA)
    return cuda::dequantize(q);
#endif
  require_cpu({&q.codes, &q.scales}, "fp8 dequantize");
  TANDEM_PROFILE_SCOPE("fp8_dequantize");
  const int64_t rows = q.rows(), cols = q.cols();
  Tensor out = Tensor::empty({rows, cols}, DType::kF32);
  const auto* codes = static_cast<const uint8_t*>(q.codes.raw_data());
  float* dst = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    fp8_decode_n(codes + r * cols, dst + r * cols, cols, q.format);
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] *= q.scale_at(r, c);
  }
  return out;
}

BlockScaledFp8 transpose_blocks(const BlockScaledFp8& q) {
  TANDEM_CHECK(q.granularity == ScaleGranularity::kBlock128x128,
               "transpose_blocks needs 128x128 blocks; 1x128 tiles must be re-quantised");
  const int64_t rows = q.rows(), cols = q.cols();
  const Device device = device_of({&q.codes, &q.scales}, "fp8 transpose_blocks");
  BlockScaledFp8 t;
  t.granularity = q.granularity;
  t.format = q.format;
  t.codes = Tensor::empty({cols, rows}, q.codes.dtype(), device);
  t.scales = Tensor::empty({q.scales.dim(1), q.scales.dim(0)}, DType::kF32, device);
#ifdef TANDEM_HAVE_CUDA
  if (device.type == DeviceType::kCUDA) {
    cuda::transpose(q.codes, t.codes);
    cuda::transpose(q.scales, t.scales);
    return t;
  }
#endif
  require_cpu({&q.codes, &q.scales}, "fp8 transpose_blocks");
  const auto* src = static_cast<const uint8_t*>(q.codes.raw_data());
  auto* dst = static_cast<uint8_t*>(t.codes.raw_data());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * cols + c];
  for (int64_t i = 0; i < q.scales.dim(0); ++i)
    for (int64_t j = 0; j < q.scales.dim(1); ++j)
      t.scales.data<float>()[j * q.scales.dim(0) + i] =
          q.scales.data<float>()[i * q.scales.dim(1) + j];
  return t;
}

int64_t fp8_payload_bytes(int64_t cols) {
  return cols + blocks(cols) * 4;
}

Tensor pack_fp8_rows(const BlockScaledFp8& q) {
  TANDEM_CHECK(q.granularity == ScaleGranularity::kTile1x128, "only 1x128-scaled rows are packed");
  const int64_t rows = q.rows(), cols = q.cols(), width = fp8_payload_bytes(cols);
  check_shape(q.scales, {rows, blocks(cols)}, "fp8 pack_fp8_rows scales");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&q.codes, &q.scales}, "fp8 pack_fp8_rows").type == DeviceType::kCUDA)
    return cuda::pack_fp8_rows(q);
#endif
  require_cpu({&q.codes, &q.scales}, "fp8 pack_fp8_rows");
  Tensor payload = Tensor::empty({rows, width}, DType::kU8);
  auto* dst = payload.data<uint8_t>();
  const auto* codes = static_cast<const uint8_t*>(q.codes.raw_data());
  const float* scales = q.scales.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * width, codes + r * cols, cols);
    std::memcpy(dst + r * width + cols, scales + r * blocks(cols), blocks(cols) * 4);
  }
  return payload;
}

BlockScaledFp8 unpack_fp8_rows(const Tensor& payload, int64_t cols, Fp8Format format) {
  check_dtype(payload, DType::kU8, "fp8 payload");
  const int64_t width = fp8_payload_bytes(cols);
  TANDEM_CHECK(payload.ndim() == 2 && payload.dim(1) == width, "fp8 payload ",
               shape_string(payload.shape()), ": expected [rows, ", width, "] bytes for ", cols,
               " columns");
  const int64_t rows = payload.dim(0);
#ifdef TANDEM_HAVE_CUDA
  if (payload.device().type == DeviceType::kCUDA)
    return cuda::unpack_fp8_rows(payload, cols, format);
#endif
  require_cpu({&payload}, "fp8 unpack_fp8_rows");
  BlockScaledFp8 q;
  q.format = format;
  q.codes = Tensor::empty({rows, cols}, dtype_of(format));
  q.scales = Tensor::empty({rows, blocks(cols)}, DType::kF32);
  const auto* src = payload.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<uint8_t*>(q.codes.raw_data()) + r * cols, src + r * width, cols);
    std::memcpy(q.scales.data<float>() + r * blocks(cols), src + r * width + cols,
                blocks(cols) * 4);
  }
  return q;
}

}  // namespace tandem::kernels
