// FP8 GEMM with per-128-of-K promotion: each 128-wide slice of K is decoded (exactly: every fp8
// value and every product of two is representable in fp32), multiplied with FP32 accumulation by
// sgemm, and the partial product is scaled by the two blocks' scales and added into the FP32
// result — the DeepSeek-V3 recipe. A scalar path emulates a limited-precision accumulator.
#include <algorithm>
#include <bit>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/fp8.h"
#include "runtime/core/profiler.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/fp8_gemm.h"
#endif

namespace tandem::kernels {

namespace {

void decode_columns(const BlockScaledFp8& q, int64_t k0, int64_t width, float* out) {
  const int64_t rows = q.rows(), cols = q.cols();
  const auto* codes = static_cast<const uint8_t*>(q.codes.raw_data());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    fp8_decode_n(codes + r * cols + k0, out + r * width, width, q.format);
}

float truncate_mantissa(float value, int bits) {
  const uint32_t mask = ~((1u << (23 - bits)) - 1u);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(value) & mask);
}

// Scalar reference with an accumulator of accumulator_mantissa_bits, promoted every 128 of K or
// not at all.
void emulated_gemm(const BlockScaledFp8& a, const BlockScaledFp8& b, float* c,
                   const Fp8GemmOptions& o) {
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  std::vector<float> av(m * k), bv(n * k);
  fp8_decode_n(static_cast<const uint8_t*>(a.codes.raw_data()), av.data(), m * k, a.format);
  fp8_decode_n(static_cast<const uint8_t*>(b.codes.raw_data()), bv.data(), n * k, b.format);
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float total = o.accumulate ? c[i * n + j] : 0.0f, partial = 0.0f;
      for (int64_t kk = 0; kk < k; ++kk) {
        const float product = av[i * k + kk] * bv[j * k + kk];
        if (o.promote_every_k) {
          partial = truncate_mantissa(partial + product, o.accumulator_mantissa_bits);
          if ((kk + 1) % kFp8Block == 0 || kk + 1 == k) {
            total += partial * a.scale_at(i, kk) * b.scale_at(j, kk);
            partial = 0.0f;
          }
        } else {  // one long accumulation; scales applied per product
          partial = truncate_mantissa(partial + product * a.scale_at(i, kk) * b.scale_at(j, kk),
                                      o.accumulator_mantissa_bits);
        }
      }
      c[i * n + j] = o.promote_every_k ? total : total + partial;
    }
}

}  // namespace

void fp8_gemm(const BlockScaledFp8& a, const BlockScaledFp8& b, Tensor& c,
              const Fp8GemmOptions& options) {
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&a.codes, &a.scales, &b.codes, &b.scales, &c}, "fp8_gemm").type ==
      DeviceType::kCUDA)
    return cuda::fp8_gemm(a, b, c, options);
#endif
  require_cpu({&a.codes, &a.scales, &b.codes, &b.scales, &c}, "fp8_gemm");
  TANDEM_PROFILE_SCOPE("fp8_gemm");
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  TANDEM_CHECK(a.granularity == ScaleGranularity::kTile1x128,
               "fp8_gemm: A must be 1x128-scaled along K");
  TANDEM_CHECK(b.cols() == k, "fp8_gemm: A is ", m, "x", k, " but B is ", b.rows(), "x", b.cols(),
               " (both are [rows, K])");
  check_shape(c, {m, n}, "fp8_gemm output");
  check_dtype(c, DType::kF32, "fp8_gemm output");
  float* out = c.data<float>();
  if (options.accumulator_mantissa_bits > 0) {
    TANDEM_CHECK(options.accumulator_mantissa_bits <= 23,
                 "accumulator mantissa bits must be <= 23");
    emulated_gemm(a, b, out, options);
    return;
  }
  TANDEM_CHECK(options.promote_every_k, "fp8_gemm without promotion is only emulated");
  if (!options.accumulate) c.zero_();
  if (m == 0 || n == 0 || k == 0) return;
  const int64_t k_blocks = (k + kFp8Block - 1) / kFp8Block;
  std::vector<float> a_block(m * kFp8Block), b_block(n * kFp8Block), partial(m * n);
  const float* a_scales = a.scales.data<float>();
  const float* b_scales = b.scales.data<float>();
  const bool b_tiles = b.granularity == ScaleGranularity::kTile1x128;
  for (int64_t kb = 0; kb < k_blocks; ++kb) {
    const int64_t k0 = kb * kFp8Block, width = std::min(kFp8Block, k - k0);
    decode_columns(a, k0, width, a_block.data());
    decode_columns(b, k0, width, b_block.data());
    gemm(false, true, m, n, width, 1.0f, a_block.data(), width, b_block.data(), width, 0.0f,
         partial.data(), n);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      const float sa = a_scales[i * k_blocks + kb];
      for (int64_t j = 0; j < n; ++j) {
        const float sb = b_scales[(b_tiles ? j : j / kFp8Block) * k_blocks + kb];
        out[i * n + j] += partial[i * n + j] * (sa * sb);
      }
    }
  }
}

BlockScaledFp8 fp8_rows(const BlockScaledFp8& q, int64_t begin, int64_t end) {
  TANDEM_CHECK(q.granularity == ScaleGranularity::kTile1x128,
               "row slices need 1x128 tiles (128x128 blocks would split)");
  BlockScaledFp8 out = q;
  out.codes = q.codes.rows(begin, end);
  out.scales = q.scales.rows(begin, end);
  return out;
}

void fp8_grouped_gemm(const BlockScaledFp8& a, const std::vector<int64_t>& offsets,
                      const std::vector<const BlockScaledFp8*>& b, Tensor& c,
                      const Fp8GemmOptions& options) {
  TANDEM_CHECK(offsets.size() == b.size() + 1 && offsets.front() == 0 && offsets.back() == a.rows(),
               "fp8_grouped_gemm: ", b.size(), " groups need ", b.size() + 1, " offsets from 0 to ",
               a.rows());
  for (size_t g = 0; g < b.size(); ++g) {
    const int64_t begin = offsets[g], end = offsets[g + 1];
    TANDEM_CHECK(begin <= end, "fp8_grouped_gemm: offsets must not decrease");
    if (begin == end) continue;
    TANDEM_CHECK(b[g]->rows() == c.dim(1), "fp8_grouped_gemm: group ", g, " has ", b[g]->rows(),
                 " output columns, C has ", c.dim(1));
    Tensor c_rows = c.rows(begin, end);
    fp8_gemm(fp8_rows(a, begin, end), *b[g], c_rows, options);
  }
}

}  // namespace tandem::kernels
