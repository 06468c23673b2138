// FP8 throughput on the CPU, each against a reference measured in the same run on the same data:
//  - 1x128 quantisation (amax, scale, encode) of an fp32 buffer vs memcpy of that buffer, both on
//    the same threads (goal: ≥ 0.5 of memcpy);
//  - the promoted FP8 GEMM (decode, per-128-of-K sgemm, scaled accumulation) vs plain sgemm on
//    the same shapes (the model's expert shapes).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "comm/bootstrap.h"
#include "kernels/fp8.h"
#include "runtime/core/random.h"
#include "runtime/core/runtime_context.h"

namespace {

double best_seconds(const std::function<void()>& body, int reps) {
  body();
  double best = 1e30;
  for (int trial = 0; trial < 5; ++trial) {
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) body();
    best = std::min(
        best,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / reps);
  }
  return best;
}

}  // namespace

int main() {
  using namespace tandem;
  set_thread_count(default_thread_count(comm::detect_launch().local_size));
  std::printf("fp8_throughput: %d threads, AVX2 encode path: %s\n\n", runtime().threads,
              kernels::fp8_uses_avx2() ? "yes" : "no");

  std::printf("%-22s %10s %10s %8s\n", "quantise 1x128 (E4M3)", "memcpy", "quantise", "ratio");
  for (int64_t rows : {4096, 16384}) {
    const int64_t cols = 1024, n = rows * cols;
    Tensor x = Tensor::empty({rows, cols}, DType::kF32), copy = x.clone();
    fill_normal(x, 1.0, 1, 2);
    const float* src = x.data<float>();
    float* dst = copy.data<float>();
    const double memcpy_s = best_seconds(
        [&] {
#pragma omp parallel for schedule(static)
          for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * cols, src + r * cols, cols * 4);
        },
        5);
    const double quantize_s =
        best_seconds([&] { kernels::quantize(x, kernels::ScaleGranularity::kTile1x128); }, 5);
    std::printf("%6lld x %-13lld %7.2f GB/s %6.2f GB/s %8.2f\n", static_cast<long long>(rows),
                static_cast<long long>(cols), 8.0 * n / memcpy_s / 1e9, 4.0 * n / quantize_s / 1e9,
                memcpy_s / quantize_s);
  }
  std::printf(
      "  (memcpy GB/s counts bytes read + written; quantise GB/s counts fp32 bytes read;\n"
      "   ratio = memcpy time / quantise time on the same fp32 buffer)\n\n");

  std::printf("%-26s %10s %10s %8s\n", "GEMM C = A·Bᵀ (M x N x K)", "sgemm", "fp8 gemm", "ratio");
  struct Shape {
    int64_t m, n, k;
  };
  for (Shape s : {Shape{1024, 1024, 512}, Shape{1024, 512, 512}, Shape{4096, 1536, 512},
                  Shape{2048, 2048, 2048}}) {
    Tensor a = Tensor::empty({s.m, s.k}, DType::kF32), b = Tensor::empty({s.n, s.k}, DType::kF32);
    Tensor c = Tensor::empty({s.m, s.n}, DType::kF32);
    fill_normal(a, 1.0, 3, 4);
    fill_normal(b, 1.0, 5, 6);
    const double flops = 2.0 * s.m * s.n * s.k;
    const int reps = std::max(1, static_cast<int>(4e9 / flops));
    const double sgemm_s = best_seconds(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.f, a.data<float>(),
                      s.k, b.data<float>(), s.k, 0.f, c.data<float>(), s.n);
        },
        reps);
    const auto qa = kernels::quantize(a, kernels::ScaleGranularity::kTile1x128);
    const auto qb = kernels::quantize(b, kernels::ScaleGranularity::kBlock128x128);
    const double fp8_s = best_seconds([&] { kernels::fp8_gemm(qa, qb, c); }, reps);
    std::printf("%5lld x %5lld x %5lld       %6.1f GF/s %6.1f GF/s %8.2f\n",
                static_cast<long long>(s.m), static_cast<long long>(s.n),
                static_cast<long long>(s.k), flops / sgemm_s / 1e9, flops / fp8_s / 1e9,
                sgemm_s / fp8_s);
  }
  std::printf(
      "  (the CPU has no FP8 arithmetic: the FP8 GEMM decodes to fp32 and runs sgemm per\n"
      "   128-wide slice of K, so its ceiling is sgemm; ratio = sgemm time / fp8 time)\n");
  return 0;
}
