// What every GPU check prints: one "ok" or "FAIL" line per expectation, the failure count that
// decides its exit code, and the line saying it skipped where no GPU answers (CI builds and runs
// the checks there; scripts/gpu-check runs them on a GPU).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "runtime/core/device.h"
#include "runtime/core/tensor.h"

namespace tandem::gpu_check {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  failures += !ok;
}

// The largest |gpu − cpu| / (|cpu| + mean |cpu|) over fp32 elements: relative where values are
// large, absolute (at the tensor's own scale) where they are near zero; infinite where the GPU's
// value is not finite.
inline double largest_relative_difference(const Tensor& gpu, const Tensor& cpu) {
  const Tensor host = gpu.to(Device::cpu());
  const float* a = host.data<float>();
  const float* b = cpu.data<float>();
  double mean = 0, worst = 0;
  for (int64_t i = 0; i < cpu.numel(); ++i) mean += std::fabs(b[i]);
  mean /= std::max<int64_t>(1, cpu.numel());
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    const double err = std::fabs(double(a[i]) - b[i]) / (std::fabs(b[i]) + mean + 1e-30);
    worst = std::max(worst, std::isfinite(a[i]) ? err : INFINITY);
  }
  return worst;
}

// True (after saying so) when this machine has no usable GPU.
inline bool skipped_without_gpu(const char* check) {
  if (cuda_device_count() > 0) return false;
  std::printf("%s: no CUDA device here (%s): skipped (built and linked)\n", check,
              device_unavailable_reason(DeviceType::kCUDA).c_str());
  return true;
}

}  // namespace tandem::gpu_check
