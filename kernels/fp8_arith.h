// The scalar arithmetic of FP8 block scaling, shared by the CPU reference and the CUDA kernels
// (compiled for the host and, under nvcc, for the device), so that both encode every value and
// choose every block scale with the very same operations: bit-exact agreement is by
// construction, and the GPU check only confirms it.
//  - encoding, normal range: round the fp32 mantissa to m bits to nearest even on the bit
//    pattern, then rebias the exponent (a carry out of the mantissa bumps the exponent);
//  - encoding, subnormal range: a + C with C = quantum·2²³ makes fp32 addition round a to a
//    multiple of the FP8 quantum (nearest even), and bits(a + C) − bits(C) is that multiple;
//  - a block's scale is amax / max_fp8 (IEEE division), optionally rounded up to a power of two
//    on the bit pattern (exact, where exp2(ceil(log2(s))) depends on log2f's last bit).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TANDEM_HOST_DEVICE __host__ __device__
#else
#define TANDEM_HOST_DEVICE
#include <bit>
#endif

namespace tandem::kernels {

TANDEM_HOST_DEVICE inline uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  return std::bit_cast<uint32_t>(x);
#endif
}

TANDEM_HOST_DEVICE inline float bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  return std::bit_cast<float>(bits);
#endif
}

// The constants of one format's encoder (E4M3: m 3, bias 7; E5M2: m 2, bias 15).
struct Fp8Codec {
  uint32_t shift;           // 23 − m
  uint32_t exponent_shift;  // (127 − bias) << m
  uint32_t max_code;        // largest finite magnitude's code
  uint32_t overflow_code;   // non-saturating overflow: NaN (E4M3) or inf (E5M2)
  uint32_t nan_code;
  uint32_t min_normal_bits;       // fp32 bits of 2^(1 − bias)
  uint32_t subnormal_magic_bits;  // fp32 bits of the FP8 quantum · 2²³
  float max_value;                // 448 or 57344
};

constexpr Fp8Codec make_fp8_codec(int mantissa_bits, int exponent_bias, uint32_t max_code,
                                  uint32_t overflow_code, uint32_t nan_code, float max_value) {
  const int emin = 1 - exponent_bias;
  return {static_cast<uint32_t>(23 - mantissa_bits),
          static_cast<uint32_t>(127 - exponent_bias) << mantissa_bits,
          max_code,
          overflow_code,
          nan_code,
          static_cast<uint32_t>(127 + emin) << 23,
          static_cast<uint32_t>(127 + emin - mantissa_bits + 23) << 23,
          max_value};
}
inline constexpr Fp8Codec kFp8CodecE4M3 = make_fp8_codec(3, 7, 0x7e, 0x7f, 0x7f, 448.0f);
inline constexpr Fp8Codec kFp8CodecE5M2 = make_fp8_codec(2, 15, 0x7b, 0x7c, 0x7e, 57344.0f);

// The code of x; overflowed = 1 when |x| was past the largest finite value (NaN excluded), which
// then becomes `on_overflow` (max_code when saturating, overflow_code otherwise).
TANDEM_HOST_DEVICE inline uint8_t fp8_encode_one(float x, const Fp8Codec& c, uint32_t on_overflow,
                                                 uint32_t& overflowed) {
  const uint32_t bits = float_bits(x);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t abs_bits = bits & 0x7fffffffu;
  const float a = bits_float(abs_bits);
  const uint32_t round = ((1u << (c.shift - 1)) - 1) + ((abs_bits >> c.shift) & 1u);
  const uint32_t normal = ((abs_bits + round) >> c.shift) - c.exponent_shift;
  const uint32_t subnormal =
      float_bits(a + bits_float(c.subnormal_magic_bits)) - c.subnormal_magic_bits;
  uint32_t code = a < bits_float(c.min_normal_bits) ? subnormal : normal;
  const bool is_nan = abs_bits > 0x7f800000u;
  const bool overflow = !is_nan && code > c.max_code;
  overflowed = overflow;
  code = overflow ? on_overflow : code;
  code = is_nan ? c.nan_code : code;
  return static_cast<uint8_t>(sign | code);
}

// |x| when finite, else 0: NaN and ±inf do not count towards a block's amax.
TANDEM_HOST_DEVICE inline float finite_magnitude(float x) {
  const uint32_t abs_bits = float_bits(x) & 0x7fffffffu;
  return abs_bits < 0x7f800000u ? bits_float(abs_bits) : 0.0f;
}

// The smallest power of two ≥ s, for s > 0 finite (subnormal s included).
TANDEM_HOST_DEVICE inline float ceil_power_of_two(float s) {
  uint32_t bits = float_bits(s);
  const uint32_t mantissa = bits & 0x7fffffu, exponent = bits & 0x7f800000u;
  if (mantissa == 0) return s;
  if (exponent != 0) return bits_float(exponent + 0x800000u);
  uint32_t power = 1;  // a subnormal: the next power of two above its mantissa
  while (power < mantissa) power <<= 1;
  return bits_float(power);
}

// A block's scale from the largest finite magnitude in it: amax / max_fp8, or 1 when the block has
// no non-zero finite value (all zeros or all NaN: the codes carry the zeros and NaNs).
TANDEM_HOST_DEVICE inline float fp8_block_scale(float amax, float max_value, bool power_of_two) {
  if (!(amax > 0) || !(amax <= 3.4028234663852886e38f)) return 1.0f;
  const float scale = amax / max_value;
  return power_of_two ? ceil_power_of_two(scale) : scale;
}

}  // namespace tandem::kernels
