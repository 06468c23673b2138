// GPU check of FP8 block scaling (scripts/gpu-check runs it on a GPU machine; CI builds it, and
// without a GPU it says it skipped). Every CUDA result is compared with the CPU reference on the
// same random inputs, bit for bit: codes, scales, saturation counts and dequantised values, for
// both formats, both granularities, the transposed form, partial tiles, rows whose width is not a
// multiple of 4 (the scalar path) and inputs holding NaN, ±inf, zeros, subnormals and huge values.
// Then the quantisation's bandwidth against a device-to-device copy of the same bytes, and the
// block-scaled GEMM (single and grouped over experts) against cuBLASLt's bf16 GEMM. The dispatch
// payload (codes then scales per row) is packed and unpacked byte for byte as on the CPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/fp8.h"
#include "kernels/linear.h"
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

// The dispatch payload packed on the GPU against the CPU's bytes, and unpacked back to the same
// codes and scales, for widths with and without a partial last tile.
void compare_payload(int64_t rows, int64_t cols, Fp8Format format, uint32_t seed) {
  const Tensor x = random_input(rows, cols, seed, true);
  const QuantizeOptions options{format, false, true};
  const BlockScaledFp8 cpu = quantize(x, ScaleGranularity::kTile1x128, options);
  const BlockScaledFp8 gpu = quantize(x.to(Device::cuda(0)), ScaleGranularity::kTile1x128, options);
  const Tensor cpu_payload = pack_fp8_rows(cpu), gpu_payload = pack_fp8_rows(gpu);
  const bool packed = same_bytes(cpu_payload, gpu_payload);
  const BlockScaledFp8 back = unpack_fp8_rows(gpu_payload, cols, format);
  const bool unpacked = same_bytes(cpu.codes, back.codes) && same_bytes(cpu.scales, back.scales);
  char line[160];
  std::snprintf(line, sizeof line, "fp8 payload [%lld x %lld] %s: packed %s, unpacked %s",
                static_cast<long long>(rows), static_cast<long long>(cols),
                format == Fp8Format::kE4M3 ? "e4m3" : "e5m2", packed ? "equal" : "DIFFER",
                unpacked ? "equal" : "DIFFER");
  expect(packed && unpacked, line);
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

// The fastest of `samples` runs of `calls` back-to-back calls of body, in ms per call, each run
// between two device-wide synchronisations (back-to-back calls let the host's planning of one
// overlap the device's work on the one before, as in training).
template <class Body>
float best_ms(int samples, int calls, Body&& body) {
  cudaEvent_t start, stop;
  TANDEM_CHECK_CUDA(cudaEventCreate(&start));
  TANDEM_CHECK_CUDA(cudaEventCreate(&stop));
  float best = std::numeric_limits<float>::max();
  for (int i = 0; i < samples; ++i) {
    TANDEM_CHECK_CUDA(cudaDeviceSynchronize());
    TANDEM_CHECK_CUDA(cudaEventRecord(start, nullptr));
    for (int call = 0; call < calls; ++call) body();
    TANDEM_CHECK_CUDA(cudaDeviceSynchronize());
    TANDEM_CHECK_CUDA(cudaEventRecord(stop, nullptr));
    TANDEM_CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    TANDEM_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    best = std::min(best, ms / calls);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

Tensor as_bf16(const Tensor& x) {
  Tensor narrow = Tensor::empty(x.shape(), DType::kBF16, x.device());
  convert(x, narrow);
  return narrow;
}

// `groups` copies of one random [rows, cols] block stacked on the GPU (each its own memory, so no
// group's operand is another's in L2), copy g scaled by 1 + g/64 so that the experts differ.
Tensor stacked_input(int64_t groups, int64_t rows, int64_t cols, uint32_t seed) {
  const Tensor block = random_input(rows, cols, seed, false).to(Device::cuda(0));
  Tensor stacked = Tensor::empty({groups * rows, cols}, DType::kF32, Device::cuda(0));
  for (int64_t g = 0; g < groups; ++g) {
    Tensor part = stacked.rows(g * rows, (g + 1) * rows);
    part.copy_from(block);  // in the compute stream's order, before the scale
    scale(part, 1.0 + static_cast<double>(g) / 64);
  }
  return stacked;
}

// TFLOPS of the block-scaled FP8 GEMM (A 1x128, B 128x128, as in DeepSeek-V3's fprop) against
// cuBLASLt's bf16 GEMM on the same values and shapes (bf16 operands, fp32 compute and output, as
// the FP8 one), for `groups` experts of m rows each with their own [n, k] weights: one GEMM when
// groups is 1, else fp8_grouped_gemm and a loop of bf16 GEMMs over the same expert blocks. Next
// to DeepGEMM's published H800 figure (H800 has H200's compute); reported, not gated.
void bench_gemm(int64_t groups, int64_t m, int64_t n, int64_t k, double deepgemm_tflops) {
  const Device gpu = Device::cuda(0);
  const Tensor x = stacked_input(groups, m, k, 3), w = stacked_input(groups, n, k, 4);
  const BlockScaledFp8 a = quantize(x, ScaleGranularity::kTile1x128);
  std::vector<BlockScaledFp8> b;
  std::vector<const BlockScaledFp8*> b_of_group;
  b.reserve(groups);
  for (int64_t g = 0; g < groups; ++g)
    b.push_back(quantize(w.rows(g * n, (g + 1) * n), ScaleGranularity::kBlock128x128));
  for (const BlockScaledFp8& weights : b) b_of_group.push_back(&weights);
  std::vector<int64_t> offsets;
  for (int64_t g = 0; g <= groups; ++g) offsets.push_back(g * m);
  const Tensor x16 = as_bf16(x), w16 = as_bf16(w);
  Tensor c = Tensor::empty({groups * m, n}, DType::kF32, gpu);
  const float fp8_ms = best_ms(5, 5, [&] {
    if (groups == 1)
      fp8_gemm(a, b[0], c);
    else
      fp8_grouped_gemm(a, offsets, b_of_group, c);
  });
  const float bf16_ms = best_ms(5, 5, [&] {
    for (int64_t g = 0; g < groups; ++g) {
      Tensor out = c.rows(g * m, (g + 1) * m);
      linear_forward(x16.rows(g * m, (g + 1) * m), w16.rows(g * n, (g + 1) * n), out);
    }
  });
  const double flops = 2.0 * groups * m * n * k;
  const double fp8_tflops = flops / (fp8_ms * 1e-3) / 1e12;
  const double bf16_tflops = flops / (bf16_ms * 1e-3) / 1e12;
  char what[64];
  if (groups == 1)
    std::snprintf(what, sizeof what, "fp8 gemm m %lld", static_cast<long long>(m));
  else
    std::snprintf(what, sizeof what, "fp8 grouped gemm %lld experts x %lld rows",
                  static_cast<long long>(groups), static_cast<long long>(m));
  std::printf(
      "bench: %s n %lld k %lld: %.3f ms, %.0f TFLOPS; bf16 %.3f ms, %.0f TFLOPS: ratio %.2f "
      "(goal >= 1.6); DeepGEMM (H800) %.0f: ratio %.2f\n",
      what, static_cast<long long>(n), static_cast<long long>(k), fp8_ms, fp8_tflops, bf16_ms,
      bf16_tflops, fp8_tflops / bf16_tflops, deepgemm_tflops, fp8_tflops / deepgemm_tflops);
}

// GB/s of quantising [rows, cols] against a device-to-device copy of the same bytes (read and
// written), each the best of 20.
void bench_bandwidth(int64_t rows, int64_t cols) {
  const Tensor x = random_input(rows, cols, 7, false).to(Device::cuda(0));
  Tensor copy = Tensor::empty({rows, cols}, DType::kF32, Device::cuda(0));
  const float quantize_ms = best_ms(20, 1, [&] { quantize(x, ScaleGranularity::kTile1x128); });
  const float copy_ms = best_ms(20, 1, [&] {
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
  for (const auto& [rows, cols] :
       {std::pair<int64_t, int64_t>{0, 128}, {1, 7}, {37, 300}, {513, 7168}})
    for (const Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2})
      compare_payload(rows, cols, format, seed++);
  for (const int64_t m : {1, 5, 128, 333})
    for (const ScaleGranularity g : {ScaleGranularity::kTile1x128, ScaleGranularity::kBlock128x128})
      compare_gemm(m, 256, 512, g, seed++);
  bench_bandwidth(8192, 7168);
  bench_gemm(1, 4096, 7168, 16384, 1426);
  bench_gemm(1, 4096, 4096, 7168, 1265);
  bench_gemm(1, 4096, 7168, 2048, 1168);
  bench_gemm(8, 4096, 4096, 7168, 1346);
  bench_gemm(8, 4096, 7168, 2048, 1214);
  std::printf("fp8_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
