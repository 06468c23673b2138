// GPU check of FP8 block scaling (scripts/gpu-check runs it on a GPU machine; CI builds it, and
// without a GPU it says it skipped). Every CUDA result is compared with the CPU reference on the
// same random inputs, bit for bit: codes, scales, saturation counts and dequantised values, for
// both formats, both granularities, the transposed form, partial tiles, rows whose width is not a
// multiple of 4 (the scalar path) and inputs holding NaN, ±inf, zeros, subnormals and huge values.
// Then the quantisation's bandwidth against a device-to-device copy of the same bytes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "kernels/fp8.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/device.h"
#include "tests/gpu/check_report.h"

using namespace tandem;
using tandem::gpu_check::expect;
using tandem::gpu_check::failures;
using namespace tandem::kernels;

namespace {

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

// cuBLASLt's block-scaled GEMM against the CPU's (both FP32-accumulated, promoted per 128 of K:
// they differ only in the order of fp32 sums), relative to Σ|a·b| of each output.
void compare_gemm(int64_t m, int64_t n, int64_t k, ScaleGranularity b_granularity, uint32_t seed) {
  const Tensor x = random_input(m, k, seed, false), w = random_input(n, k, seed + 1, false);
  const BlockScaledFp8 a = quantize(x, ScaleGranularity::kTile1x128);
  const BlockScaledFp8 b = quantize(w, b_granularity);
  Tensor c_cpu = Tensor::empty({m, n}, DType::kF32);
  fp8_gemm(a, b, c_cpu);
  const BlockScaledFp8 a_gpu = quantize(x.to(Device::cuda(0)), ScaleGranularity::kTile1x128);
  const BlockScaledFp8 b_gpu = quantize(w.to(Device::cuda(0)), b_granularity);
  Tensor c_gpu = Tensor::empty({m, n}, DType::kF32, Device::cuda(0));
  fp8_gemm(a_gpu, b_gpu, c_gpu);
  const Tensor back = c_gpu.to(Device::cpu());
  const Tensor xa = dequantize(a), wb = dequantize(b);
  double worst = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double magnitude = 0;
      for (int64_t l = 0; l < k; ++l)
        magnitude += std::abs(double(xa.data<float>()[i * k + l]) * wb.data<float>()[j * k + l]);
      const double error =
          std::abs(double(back.data<float>()[i * n + j]) - c_cpu.data<float>()[i * n + j]);
      worst = std::max(worst, magnitude > 0 ? error / magnitude : error);
    }
  char line[200];
  std::snprintf(line, sizeof line,
                "fp8_gemm m %lld n %lld k %lld (B %s): worst |gpu - cpu| / sum|a b| = %.2e "
                "(bound 1e-5)",
                static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                b_granularity == ScaleGranularity::kTile1x128 ? "1x128" : "128x128", worst);
  expect(worst < 1e-5, line);
}

// The fastest of `reps` runs of body, in ms, each between two device-wide synchronisations.
template <class Body>
float best_ms(int reps, Body&& body) {
  cudaEvent_t start, stop;
  TANDEM_CHECK_CUDA(cudaEventCreate(&start));
  TANDEM_CHECK_CUDA(cudaEventCreate(&stop));
  float best = std::numeric_limits<float>::max();
  for (int i = 0; i < reps; ++i) {
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
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

// TFLOPS of the block-scaled FP8 GEMM at DeepSeek-V3's shapes, next to DeepGEMM's published
// H800 figures (H800 has H200's compute); reported, not gated.
void bench_gemm(int64_t m, int64_t n, int64_t k, double deepgemm_tflops) {
  const Device gpu = Device::cuda(0);
  const BlockScaledFp8 a =
      quantize(random_input(m, k, 3, false).to(gpu), ScaleGranularity::kTile1x128);
  const BlockScaledFp8 b =
      quantize(random_input(n, k, 4, false).to(gpu), ScaleGranularity::kBlock128x128);
  Tensor c = Tensor::empty({m, n}, DType::kF32, gpu);
  const float best = best_ms(10, [&] { fp8_gemm(a, b, c); });
  const double tflops = 2.0 * m * n * k / (best * 1e-3) / 1e12;
  std::printf(
      "bench: fp8 gemm m %lld n %lld k %lld: %.3f ms, %.0f TFLOPS; DeepGEMM (H800) %.0f: "
      "ratio %.2f\n",
      static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k), best, tflops,
      deepgemm_tflops, tflops / deepgemm_tflops);
}

// GB/s of quantising [rows, cols] against a device-to-device copy of the same bytes (read and
// written), each the best of 20.
void bench_bandwidth(int64_t rows, int64_t cols) {
  const Tensor x = random_input(rows, cols, 7, false).to(Device::cuda(0));
  Tensor copy = Tensor::empty({rows, cols}, DType::kF32, Device::cuda(0));
  const float quantize_ms = best_ms(20, [&] { quantize(x, ScaleGranularity::kTile1x128); });
  const float copy_ms = best_ms(20, [&] {
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
}

}  // namespace

int main() {
  if (gpu_check::skipped_without_gpu("fp8_check")) return 0;
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
  for (const int64_t m : {1, 5, 128, 333})
    for (const ScaleGranularity g : {ScaleGranularity::kTile1x128, ScaleGranularity::kBlock128x128})
      compare_gemm(m, 256, 512, g, seed++);
  bench_bandwidth(8192, 7168);
  bench_gemm(4096, 7168, 16384, 1426);
  bench_gemm(4096, 4096, 7168, 1265);
  bench_gemm(4096, 7168, 2048, 1168);
  std::printf("fp8_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
