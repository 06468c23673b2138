// What every GPU check prints: one "ok" or "FAIL" line per expectation, the failure count that
// decides its exit code, and the line saying it skipped where no GPU answers (CI builds and runs
// the checks there; scripts/gpu-check runs them on a GPU).
#pragma once

#include <cstdio>
#include <string>

#include "runtime/core/device.h"

namespace tandem::gpu_check {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  failures += !ok;
}

// True (after saying so) when this machine has no usable GPU.
inline bool skipped_without_gpu(const char* check) {
  if (cuda_device_count() > 0) return false;
  std::printf("%s: no CUDA device here (%s): skipped (built and linked)\n", check,
              device_unavailable_reason(DeviceType::kCUDA).c_str());
  return true;
}

}  // namespace tandem::gpu_check
