// Deterministic fills from counter-based random numbers.
#include "runtime/core/random.h"

#include <cmath>
#include <numbers>

namespace tandem {

namespace {
template <class Body>
void for_float(Tensor& tensor, Body&& body) {
  if (tensor.dtype() == DType::kF32) {
    body(tensor.data<float>());
  } else if (tensor.dtype() == DType::kF64) {
    body(tensor.data<double>());
  } else {
    TANDEM_FAIL("fill needs an fp32 or fp64 tensor, got ", dtype_name(tensor.dtype()));
  }
}
}  // namespace

void fill_normal(Tensor& tensor, double std, uint64_t seed, uint64_t stream) {
  const int64_t n = tensor.numel();
  for_float(tensor, [&](auto* data) {
    using T = std::remove_pointer_t<decltype(data)>;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t pair = static_cast<uint64_t>(i) / 2;
      const double u1 = 1.0 - random_uniform(seed, stream, 2 * pair);  // (0, 1]: log is finite
      const double u2 = random_uniform(seed, stream, 2 * pair + 1);
      const double radius = std::sqrt(-2.0 * std::log(u1));
      const double angle = 2.0 * std::numbers::pi * u2;
      data[i] = static_cast<T>(std * radius * (i % 2 ? std::sin(angle) : std::cos(angle)));
    }
  });
}

void fill_constant(Tensor& tensor, double value) {
  const int64_t n = tensor.numel();
  for_float(tensor, [&](auto* data) {
    using T = std::remove_pointer_t<decltype(data)>;
    for (int64_t i = 0; i < n; ++i) data[i] = static_cast<T>(value);
  });
}

}  // namespace tandem
