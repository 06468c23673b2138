// Names and sizes of element types.
#include "runtime/core/dtype.h"

#include "runtime/core/errors.h"

namespace tandem {

namespace {
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kInfo[] = {
    {DType::kF32, "fp32", 4},        {DType::kF64, "fp64", 8},        {DType::kBF16, "bf16", 2},
    {DType::kF8E4M3, "fp8_e4m3", 1}, {DType::kF8E5M2, "fp8_e5m2", 1}, {DType::kI32, "int32", 4},
    {DType::kI64, "int64", 8},       {DType::kU8, "uint8", 1},
};
}  // namespace

size_t dtype_size(DType dtype) {
  return kInfo[static_cast<int>(dtype)].size;
}
std::string_view dtype_name(DType dtype) {
  return kInfo[static_cast<int>(dtype)].name;
}

DType parse_dtype(std::string_view name) {
  for (const auto& info : kInfo)
    if (info.name == name) return info.dtype;
  TANDEM_USER_CHECK(false, "unknown dtype '", name,
                    "'; expected one of fp32, fp64, bf16, fp8_e4m3, fp8_e5m2, int32, int64, uint8");
  return DType::kF32;
}

}  // namespace tandem
