// FP8 E4M3 / E5M2 encoding and decoding on the CPU. The arithmetic is kernels/fp8_arith.h's
// (shared with the CUDA kernels): branch-free integer and float operations on the fp32 bit
// pattern, so one loop body vectorises and runs scalar elsewhere with identical results. On
// x86-64 an AVX2 form of the same operations is chosen at run time; elsewhere (aarch64) the
// portable loop is all there is.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <limits>

#include "kernels/fp8.h"
#include "kernels/fp8_arith.h"
#include "runtime/core/profiler.h"

namespace tandem::kernels {

namespace {

using Codec = Fp8Codec;

const Codec& codec(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? kFp8CodecE4M3 : kFp8CodecE5M2;
}

[[gnu::always_inline]] inline int64_t encode_loop(const float* in, float multiplier, uint8_t* out,
                                                  int64_t n, const Codec& c, bool saturate) {
  const uint32_t on_overflow = saturate ? c.max_code : c.overflow_code;
  const Codec local = c;  // a local copy lets the compiler keep every constant in a register
  int64_t saturated = 0;
#pragma omp simd reduction(+ : saturated)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t overflowed = 0;
    out[i] = fp8_encode_one(in[i] * multiplier, local, on_overflow, overflowed);
    saturated += overflowed;
  }
  return saturated;
}

#if defined(__x86_64__)
// The same arithmetic as fp8_encode_one on 8 lanes (GCC does not vectorise the scalar form well).
[[gnu::target("avx2,fma")]] int64_t encode_avx2(const float* in, float multiplier, uint8_t* out,
                                                int64_t n, const Codec& c, bool saturate) {
  const __m256 scale = _mm256_set1_ps(multiplier);
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(c.shift));
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), one = _mm256_set1_epi32(1);
  const __m256i sign_mask = _mm256_set1_epi32(0x80);
  const __m256i round_base = _mm256_set1_epi32(static_cast<int>((1u << (c.shift - 1)) - 1));
  const __m256i exponent_shift = _mm256_set1_epi32(static_cast<int>(c.exponent_shift));
  const __m256i max_code = _mm256_set1_epi32(static_cast<int>(c.max_code));
  const __m256i on_overflow =
      _mm256_set1_epi32(static_cast<int>(saturate ? c.max_code : c.overflow_code));
  const __m256i nan_code = _mm256_set1_epi32(static_cast<int>(c.nan_code));
  const __m256i inf_bits = _mm256_set1_epi32(0x7f800000);
  const __m256i magic_bits = _mm256_set1_epi32(static_cast<int>(c.subnormal_magic_bits));
  const __m256 magic = _mm256_set1_ps(bits_float(c.subnormal_magic_bits));
  const __m256 min_normal = _mm256_set1_ps(bits_float(c.min_normal_bits));
  __m256i saturated = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i bits = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(in + i), scale));
    const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), sign_mask);
    const __m256i abs_bits = _mm256_and_si256(bits, abs_mask);
    const __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(abs_bits, shift), one);
    const __m256i normal = _mm256_sub_epi32(
        _mm256_srl_epi32(_mm256_add_epi32(abs_bits, _mm256_add_epi32(round_base, lsb)), shift),
        exponent_shift);
    const __m256 a = _mm256_castsi256_ps(abs_bits);
    const __m256i subnormal =
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(a, magic)), magic_bits);
    const __m256i is_subnormal = _mm256_castps_si256(_mm256_cmp_ps(a, min_normal, _CMP_LT_OQ));
    __m256i code = _mm256_blendv_epi8(normal, subnormal, is_subnormal);
    const __m256i is_nan = _mm256_cmpgt_epi32(abs_bits, inf_bits);
    const __m256i overflow = _mm256_andnot_si256(is_nan, _mm256_cmpgt_epi32(code, max_code));
    code = _mm256_blendv_epi8(code, on_overflow, overflow);
    code = _mm256_or_si256(_mm256_blendv_epi8(code, nan_code, is_nan), sign);
    saturated = _mm256_sub_epi32(saturated, overflow);  // overflow lanes are −1
    const __m128i words =
        _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(words, words));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), saturated);
  int64_t total = 0;
  for (int32_t lane : lanes) total += lane;
  return total + encode_loop(in + i, multiplier, out + i, n - i, c, saturate);
}
#endif

int64_t encode_portable(const float* in, float multiplier, uint8_t* out, int64_t n, const Codec& c,
                        bool saturate) {
  return encode_loop(in, multiplier, out, n, c, saturate);
}

struct DecodeTable {
  float values[256];
};

DecodeTable make_table(Fp8Format format) {
  const Fp8FormatInfo& info = fp8_info(format);
  const int m = info.mantissa_bits, e_bits = 7 - m;
  DecodeTable t;
  for (int code = 0; code < 256; ++code) {
    const int magnitude = code & 0x7f, exponent = magnitude >> m,
              mantissa = magnitude & ((1 << m) - 1);
    float value;
    if (format == Fp8Format::kE4M3 && magnitude == 0x7f) {
      value = std::numeric_limits<float>::quiet_NaN();
    } else if (format == Fp8Format::kE5M2 && exponent == (1 << e_bits) - 1) {
      value = mantissa == 0 ? std::numeric_limits<float>::infinity()
                            : std::numeric_limits<float>::quiet_NaN();
    } else if (exponent == 0) {
      value = std::ldexp(static_cast<float>(mantissa), 1 - info.exponent_bias - m);
    } else {
      value = std::ldexp(1.0f + std::ldexp(static_cast<float>(mantissa), -m),
                         exponent - info.exponent_bias);
    }
    t.values[code] = code & 0x80 ? -value : value;
  }
  return t;
}

const DecodeTable& table(Fp8Format format) {
  static const DecodeTable e4m3 = make_table(Fp8Format::kE4M3), e5m2 = make_table(Fp8Format::kE5M2);
  return format == Fp8Format::kE4M3 ? e4m3 : e5m2;
}

}  // namespace

const Fp8FormatInfo& fp8_info(Fp8Format format) {
  static const Fp8FormatInfo e4m3{3, 7, 0x7e, 0x7f, 448.0f}, e5m2{2, 15, 0x7b, 0x7c, 57344.0f};
  return format == Fp8Format::kE4M3 ? e4m3 : e5m2;
}

Fp8Format fp8_format_of(DType dtype) {
  TANDEM_CHECK(dtype == DType::kF8E4M3 || dtype == DType::kF8E5M2,
               "not an fp8 dtype: ", dtype_name(dtype));
  return dtype == DType::kF8E4M3 ? Fp8Format::kE4M3 : Fp8Format::kE5M2;
}

DType dtype_of(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? DType::kF8E4M3 : DType::kF8E5M2;
}

uint8_t fp8_encode(float value, Fp8Format format, bool saturate) {
  const Codec& c = codec(format);
  uint32_t overflowed = 0;
  return fp8_encode_one(value, c, saturate ? c.max_code : c.overflow_code, overflowed);
}

float fp8_decode(uint8_t code, Fp8Format format) {
  return table(format).values[code];
}

bool fp8_uses_avx2() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
#else
  return false;
#endif
}

int64_t fp8_encode_n(const float* in, float multiplier, uint8_t* out, int64_t n, Fp8Format format,
                     bool saturate) {
  const Codec& c = codec(format);
#if defined(__x86_64__)
  if (fp8_uses_avx2()) return encode_avx2(in, multiplier, out, n, c, saturate);
#endif
  return encode_portable(in, multiplier, out, n, c, saturate);
}

int64_t fp8_encode_n_portable(const float* in, float multiplier, uint8_t* out, int64_t n,
                              Fp8Format format, bool saturate) {
  return encode_portable(in, multiplier, out, n, codec(format), saturate);
}

void fp8_decode_n(const uint8_t* in, float* out, int64_t n, Fp8Format format) {
  const float* values = table(format).values;
  for (int64_t i = 0; i < n; ++i) out[i] = values[in[i]];
}

}  // namespace tandem::kernels
