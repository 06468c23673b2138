// GPU check of FP8 block scaling (scripts/gpu-check runs it on a GPU machine; CI builds it, and
// without a GPU it says it skipped). Every CUDA result is compared with the CPU reference on the
// same random inputs, bit for bit: codes, scales, saturation counts and dequantised values, for
// both formats, both granularities, the transposed form, partial tiles, rows whose width is not a
// multiple of 4 (the scalar path) and inputs holding NaN, ±inf, zeros, subnormals and huge values.
// Then the quantisation's bandwidth against a device-to-device copy of the same bytes.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "kernels/fp8.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/device.h"

using namespace tandem;
using namespace tandem::kernels;

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  failures += !ok;
}

Tensor random_input(int64_t rows, int64_t cols, uint32_t seed, bool specials) {
  Tensor x = Tensor::empty({rows, cols}, DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-30, 30), pick(0, 199);
  float* v = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    v[i] = std::ldexp(normal(rng), exponent(rng) / 3);
    if (!specials) continue;
    switch (pick(rng)) {
      case 0:
        v[i] = std::numeric_limits<float>::quiet_NaN();
        break;
      case 1:
        v[i] = -std::numeric_limits<float>::infinity();
        break;
      case 2:
        v[i] = 0.0f;
        break;
      case 3:
        v[i] = 1e-41f;
        break;  // subnormal
      case 4:
        v[i] = 3e38f;
        break;
      default:
        break;
    }
  }
  return x;
}

bool same_bytes(const Tensor& cpu, const Tensor& gpu) {
  const Tensor back = gpu.to(Device::cpu());
  return cpu.nbytes() == back.nbytes() &&
         std::memcmp(cpu.raw_data(), back.raw_data(), cpu.nbytes()) == 0;
}

void compare(const char* what, int64_t rows, int64_t cols, ScaleGranularity granularity,
             bool transposed, const QuantizeOptions& options, bool specials, uint32_t seed) {
  const Tensor x = random_input(rows, cols, seed, specials);
  const Tensor x_gpu = x.to(Device::cuda(0));
  Fp8Stats cpu_stats, gpu_stats;
  const BlockScaledFp8 a = transposed ? quantize_transposed(x, options, &cpu_stats)
                                      : quantize(x, granularity, options, &cpu_stats);
  const BlockScaledFp8 b = transposed ? quantize_transposed(x_gpu, options, &gpu_stats)
                                      : quantize(x_gpu, granularity, options, &gpu_stats);
  const bool codes = same_bytes(a.codes, b.codes), scales = same_bytes(a.scales, b.scales);
  const bool stats =
      cpu_stats.values == gpu_stats.values && cpu_stats.saturated == gpu_stats.saturated &&
      cpu_stats.min_scale == gpu_stats.min_scale && cpu_stats.max_scale == gpu_stats.max_scale;
  const bool values = same_bytes(dequantize(a), dequantize(b));
  char line[256];
  std::snprintf(line, sizeof line,
                "%s [%lld x %lld] %s%s%s: codes %s, scales %s, stats %s (%lld saturated), "
                "dequantised %s",
                what, static_cast<long long>(rows), static_cast<long long>(cols),
                options.format == Fp8Format::kE4M3 ? "e4m3" : "e5m2",
                options.power_of_two_scales ? " pow2" : "", options.saturate ? "" : " no-sat",
                codes ? "equal" : "DIFFER", scales ? "equal" : "DIFFER", stats ? "equal" : "DIFFER",
                static_cast<long long>(cpu_stats.saturated), values ? "equal" : "DIFFER");
  expect(codes && scales && stats && values, line);
}

// GB/s of quantising [rows, cols] against a device-to-device copy of the same bytes (read and
// written), each the best of 20.
void bench_bandwidth(int64_t rows, int64_t cols) {
  const Tensor x = random_input(rows, cols, 7, false).to(Device::cuda(0));
  Tensor copy = Tensor::empty({rows, cols}, DType::kF32, Device::cuda(0));
  cudaEvent_t start, stop;
  TANDEM_CHECK_CUDA(cudaEventCreate(&start));
  TANDEM_CHECK_CUDA(cudaEventCreate(&stop));
  auto best_ms = [&](auto&& body) {
    float best = std::numeric_limits<float>::max();
    for (int i = 0; i < 20; ++i) {
      TANDEM_CHECK_CUDA(cudaDeviceSynchronize());
      TANDEM_CHECK_CUDA(cudaEventRecord(start, nullptr));
      body();
      TANDEM_CHECK_CUDA(cudaDeviceSynchronize());
      TANDEM_CHECK_CUDA(cudaEventRecord(stop, nullptr));
      TANDEM_CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      TANDEM_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      best = std::min(best, ms);
    }
    return best;
  };
  const float quantize_ms = best_ms([&] { quantize(x, ScaleGranularity::kTile1x128); });
  const float copy_ms = best_ms([&] {
    TANDEM_CHECK_CUDA(cudaMemcpy(copy.raw_data(), x.raw_data(), x.nbytes(), cudaMemcpyDefault));
  });
  // Quantising reads 4 bytes and writes 1 (+ 4 per 128) per value; the copy reads and writes 4.
  const double values = static_cast<double>(rows * cols);
  const double quantize_bytes = values * (4 + 1 + 4.0 / 128), copy_bytes = values * 8;
  const double q_gbs = quantize_bytes / quantize_ms / 1e6, c_gbs = copy_bytes / copy_ms / 1e6;
  std::printf(
      "bench: fp8 quantise 1x128 [%lld x %lld]: %.3f ms, %.0f GB/s; device copy %.3f ms, "
      "%.0f GB/s; ratio %.2f (goal >= 0.8)\n",
      static_cast<long long>(rows), static_cast<long long>(cols), quantize_ms, q_gbs, copy_ms,
      c_gbs, q_gbs / c_gbs);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::printf("fp8_check: no CUDA device here (%s): skipped (built and linked)\n",
                device_unavailable_reason(DeviceType::kCUDA).c_str());
    return 0;
  }
  uint32_t seed = 1;
  for (const Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2})
    for (const bool pow2 : {false, true})
      for (const bool saturate : {true, false}) {
        const QuantizeOptions options{format, pow2, saturate};
        compare("tiles", 64, 1024, ScaleGranularity::kTile1x128, false, options, false, seed++);
        compare("tiles", 130, 300, ScaleGranularity::kTile1x128, false, options, true, seed++);
        compare("tiles", 33, 257, ScaleGranularity::kTile1x128, false, options, true, seed++);
        compare("blocks", 256, 512, ScaleGranularity::kBlock128x128, false, options, false, seed++);
        compare("blocks", 300, 130, ScaleGranularity::kBlock128x128, false, options, true, seed++);
        compare("blocks", 129, 255, ScaleGranularity::kBlock128x128, false, options, true, seed++);
        compare("transposed", 200, 384, ScaleGranularity::kTile1x128, true, options, true, seed++);
      }
  compare("empty", 0, 128, ScaleGranularity::kTile1x128, false, {}, false, seed++);
  bench_bandwidth(8192, 7168);
  std::printf("fp8_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
