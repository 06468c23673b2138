// Element types of tensors: what each is called, how wide it is, and the C++ type behind it.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace tandem {

enum class DType : uint8_t { kF32, kF64, kBF16, kF8E4M3, kF8E5M2, kI32, kI64, kU8 };

// Storage-only element types: arithmetic on them lives in kernels/ (bf16 here, fp8 in fp8/).
struct bf16 {
  uint16_t bits;
};
struct fp8_e4m3 {
  uint8_t bits;
};
struct fp8_e5m2 {
  uint8_t bits;
};

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);
// Parses "fp32", "fp64", "bf16", "fp8_e4m3", "fp8_e5m2", "int32", "int64", "uint8".
DType parse_dtype(std::string_view name);

template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<bf16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<fp8_e4m3> {
  static constexpr DType value = DType::kF8E4M3;
};
template <>
struct DTypeOf<fp8_e5m2> {
  static constexpr DType value = DType::kF8E5M2;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};

// bf16 is the top half of an fp32; conversion rounds to nearest even and keeps NaN a NaN.
inline bf16 to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((bits >> 16) | 0x40)};
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return bf16{static_cast<uint16_t>(bits >> 16)};
}
inline float to_float(bf16 value) {
  uint32_t bits = static_cast<uint32_t>(value.bits) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

}  // namespace tandem
