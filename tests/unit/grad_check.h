// Central finite differences in double precision, for checking hand-written backward passes.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>

#include "runtime/core/random.h"
#include "runtime/core/tensor.h"

namespace tandem::testing {

inline Tensor random_tensor(Shape shape, uint64_t seed, double std = 1.0,
                            DType dtype = DType::kF64) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  fill_normal(t, std, seed, 7);
  return t;
}

inline double dot(const Tensor& a, const Tensor& b) {
  double sum = 0;
  for (int64_t i = 0; i < a.numel(); ++i) sum += a.data<double>()[i] * b.data<double>()[i];
  return sum;
}

// Compares analytic[i] with (loss(x+ε) − loss(x−ε)) / 2ε for up to max_entries entries of wrt
// (evenly spread), and returns max |analytic − numeric| / max |numeric| over them (infinity when
// either is NaN).
inline double gradient_error(Tensor& wrt, const Tensor& analytic,
                             const std::function<double()>& loss, double eps = 1e-6,
                             int64_t max_entries = 48) {
  double* x = wrt.data<double>();
  const double* g = analytic.data<double>();
  const int64_t n = wrt.numel();
  const int64_t stride = std::max<int64_t>(1, n / max_entries);
  double max_diff = 0, max_numeric = 1e-12;
  for (int64_t i = 0; i < n; i += stride) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double up = loss();
    x[i] = saved - eps;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2 * eps);
    // std::max drops a NaN (every comparison with it is false): a NaN anywhere fails the check.
    if (std::isnan(g[i]) || std::isnan(numeric)) return INFINITY;
    max_diff = std::max(max_diff, std::abs(g[i] - numeric));
    max_numeric = std::max(max_numeric, std::abs(numeric));
  }
  return max_diff / max_numeric;
}

}  // namespace tandem::testing
