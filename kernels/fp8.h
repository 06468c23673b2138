// FP8 in the DeepSeek-V3 recipe: OCP E4M3/E5M2 codecs, block-scaled tensors (activations per
// 1×128 tile, weights per 128×128 block, scales from the current amax), and GEMMs on them with FP32
// accumulation promoted every 128 elements of K. The CPU implementation is the numerical
// reference for the GPU kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/choices.h"
#include "runtime/core/tensor.h"

namespace tandem::kernels {

// ---- Codecs -------------------------------------------------------------------------------------
// E4M3: bias 7, max 448, no infinities, S.1111.111 is NaN. E5M2: bias 15, max 57344, IEEE inf/NaN.
// Encoding rounds to nearest even and keeps NaN a NaN. Saturating (the default) maps magnitudes
// past the largest finite value, infinities included, to ±max; non-saturating gives NaN (E4M3) or
// ±inf (E5M2). Decoding is exact.
using tandem::Fp8Format;  // with the other configuration choices (runtime/core/choices.h)

struct Fp8FormatInfo {
  int mantissa_bits;
  int exponent_bias;
  uint8_t max_finite_code;  // positive
  uint8_t overflow_code;    // positive code for non-saturating overflow: NaN (E4M3) or inf (E5M2)
  float max_value;
};
const Fp8FormatInfo& fp8_info(Fp8Format format);
Fp8Format fp8_format_of(DType dtype);  // kF8E4M3 / kF8E5M2
DType dtype_of(Fp8Format format);

uint8_t fp8_encode(float value, Fp8Format format, bool saturate = true);
float fp8_decode(uint8_t code, Fp8Format format);
// Bulk versions: out[i] = encode(in[i] · multiplier). AVX2 when the CPU has it (chosen at run time,
// identical results), scalar otherwise. Returns how many values saturated (clamped to ±max).
int64_t fp8_encode_n(const float* in, float multiplier, uint8_t* out, int64_t n, Fp8Format format,
                     bool saturate = true);
void fp8_decode_n(const uint8_t* in, float* out, int64_t n, Fp8Format format);
bool fp8_uses_avx2();
// The non-AVX2 path, whatever the CPU (tests compare the two bit for bit).
int64_t fp8_encode_n_portable(const float* in, float multiplier, uint8_t* out, int64_t n,
                              Fp8Format format, bool saturate = true);

// ---- Block-scaled tensors -----------------------------------------------------------------------
// codes [rows, cols] (dtype fp8_e4m3 / fp8_e5m2) and fp32 scales: value ≈ decode(code) · scale.
// Tile 1×128: scales [rows, ⌈cols/128⌉] (one per row per 128 columns); block 128×128: scales
// [⌈rows/128⌉, ⌈cols/128⌉]. A final partial tile or block is allowed: no padding is needed.
enum class ScaleGranularity : uint8_t { kTile1x128, kBlock128x128 };
constexpr int64_t kFp8Block = 128;

struct BlockScaledFp8 {
  Tensor codes;
  Tensor scales;
  ScaleGranularity granularity = ScaleGranularity::kTile1x128;
  Fp8Format format = Fp8Format::kE4M3;
  int64_t rows() const { return codes.dim(0); }
  int64_t cols() const { return codes.dim(1); }
  float scale_at(int64_t row, int64_t col) const;
};

struct QuantizeOptions {
  Fp8Format format = Fp8Format::kE4M3;
  bool power_of_two_scales = false;  // round each scale up to a power of two (exact rescaling)
  bool saturate = true;
};

// Statistics a quantisation adds to (for metrics): values seen, values clamped, scale range.
struct Fp8Stats {
  int64_t values = 0;
  int64_t saturated = 0;
  double min_scale = 0, max_scale = 0;  // over non-empty blocks; 0 before the first
  void add_scale(double scale);
  void merge(const Fp8Stats& other);
};

// Scale of a block = amax / max_fp8 over its finite values (1 for an all-zero or all-NaN block);
// codes = encode(x / scale). x is fp32 [rows, cols].
BlockScaledFp8 quantize(const Tensor& x, ScaleGranularity granularity,
                        const QuantizeOptions& options = {}, Fp8Stats* stats = nullptr);
// The 1×128 quantisation of xᵀ (scaled along x's rows): what wgrad needs of activations and output
// gradients, whose contraction runs over tokens.
BlockScaledFp8 quantize_transposed(const Tensor& x, const QuantizeOptions& options = {},
                                   Fp8Stats* stats = nullptr);
Tensor dequantize(const BlockScaledFp8& q);
// Transposes a 128×128-block tensor exactly (codes and block scales move together): the weight
// layout dgrad needs, without re-rounding.
BlockScaledFp8 transpose_blocks(const BlockScaledFp8& q);

// ---- GEMM ---------------------------------------------------------------------------------------
// C[M, N] (+)= A[M, K] · B[N, K]ᵀ, A 1×128-scaled, B 1×128- or 128×128-scaled, both along K.
// Each 128-wide slice of K is multiplied with FP32 accumulation and then promoted: scaled by
// scale_A(m, kb) · scale_B(n, kb) and added into the FP32 result.
struct Fp8GemmOptions {
  bool accumulate = false;  // C += instead of C =
  // Emulation of a limited-precision tensor-core accumulator, to show why promotion matters:
  // accumulator_mantissa_bits > 0 keeps the partial sum to that many mantissa bits (truncating
  // after each add, as Hopper's FP8 MMA does at about 14 bits); promote_every_k = false then sums
  // the whole K in that accumulator instead of promoting every 128.
  int accumulator_mantissa_bits = 0;
  bool promote_every_k = true;
};
void fp8_gemm(const BlockScaledFp8& a, const BlockScaledFp8& b, Tensor& c,
              const Fp8GemmOptions& options = {});

// Grouped GEMM over experts in the contiguous layout: A's rows are grouped by expert
// (group g owns rows [offsets[g], offsets[g+1])), and C's rows of group g = A_g · b[g]ᵀ. 1×128
// scales are per row, so groups need no padding to the block size.
void fp8_grouped_gemm(const BlockScaledFp8& a, const std::vector<int64_t>& offsets,
                      const std::vector<const BlockScaledFp8*>& b, Tensor& c,
                      const Fp8GemmOptions& options = {});
// Rows [begin, end) of a 1×128-scaled tensor, sharing storage.
BlockScaledFp8 fp8_rows(const BlockScaledFp8& q, int64_t begin, int64_t end);

// ---- Dispatch payload ---------------------------------------------------------------------------
// One routed token travels as its fp8 row followed by its ⌈d/128⌉ fp32 scales, so the all-to-all
// moves a single byte buffer. pack: 1×128-scaled [N, d] → uint8 [N, fp8_payload_bytes(d)].
int64_t fp8_payload_bytes(int64_t cols);
Tensor pack_fp8_rows(const BlockScaledFp8& q);
BlockScaledFp8 unpack_fp8_rows(const Tensor& payload, int64_t cols, Fp8Format format);

}  // namespace tandem::kernels
