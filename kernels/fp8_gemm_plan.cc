// cuBLASLt block-scaled FP8 GEMM plans and scale layouts, on the host.
#include "kernels/fp8_gemm_plan.h"

#include "kernels/cpu/dispatch.h"

namespace tandem::kernels {

namespace {

int64_t blocks(int64_t extent) {
  return (extent + kFp8Block - 1) / kFp8Block;
}

}  // namespace

CublasScaleLayout cublas_scale_layout(ScaleGranularity granularity, int64_t rows, int64_t k) {
  TANDEM_CHECK(rows >= 0 && k > 0, "scale layout of a [", rows, ", ", k, "] operand");
  if (granularity == ScaleGranularity::kTile1x128) return {blocks(k), pad4(rows)};
  return {blocks(rows), pad4(blocks(k))};
}

Fp8GemmPlan plan_fp8_gemm(int64_t m, int64_t n, int64_t k, ScaleGranularity a, ScaleGranularity b) {
  TANDEM_CHECK(m > 0 && n > 0 && k > 0, "fp8 GEMM of m ", m, " n ", n, " k ", k);
  TANDEM_CHECK(!(a == ScaleGranularity::kBlock128x128 && b == ScaleGranularity::kBlock128x128),
               "fp8 GEMM m ", m, " n ", n, " k ", k,
               ": cuBLASLt has no 128x128 x 128x128 block scaling; quantise one operand 1x128");
  TANDEM_CHECK(k % 16 == 0, "fp8 GEMM m ", m, " n ", n, " k ", k,
               ": cuBLASLt needs K (the leading dimension of both fp8 operands) a multiple of 16");
  TANDEM_CHECK(n % 16 == 0, "fp8 GEMM m ", m, " n ", n, " k ", k,
               ": cuBLASLt needs N (the output's leading dimension) a multiple of 16");
  Fp8GemmPlan plan;
  plan.m = m, plan.n = n, plan.k = k;
  plan.a_granularity = a, plan.b_granularity = b;
  plan.a_scales = cublas_scale_layout(a, m, k);
  plan.b_scales = cublas_scale_layout(b, n, k);
  // Row-major A [M, K] and B [N, K] are column-major K×M and K×N: "T" and "N" with ld = K; the
  // row-major output [M, N] is column-major N×M, ld = N.
  plan.lda = k, plan.ldb = k, plan.ldc = n;
  return plan;
}

GroupedFp8GemmPlan plan_grouped_fp8_gemm(const std::vector<int64_t>& offsets, int64_t n, int64_t k,
                                         ScaleGranularity b) {
  TANDEM_CHECK(!offsets.empty() && offsets.front() == 0, "expert offsets must start at 0");
  GroupedFp8GemmPlan plan;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t rows = offsets[e + 1] - offsets[e];
    TANDEM_CHECK(rows >= 0, "expert offsets decrease at expert ", e, ": ", offsets[e], " then ",
                 offsets[e + 1]);
    if (rows == 0) continue;
    plan.experts.push_back(static_cast<int64_t>(e));
    plan.gemms.push_back(plan_fp8_gemm(rows, n, k, ScaleGranularity::kTile1x128, b));
    plan.a_scale_offsets.push_back(plan.a_scale_elements);
    plan.a_scale_elements += plan.gemms.back().a_scales.elements();
  }
  return plan;
}

Tensor to_cublas_scales(const BlockScaledFp8& q) {
  require_cpu({&q.scales}, "to_cublas_scales");
  const int64_t rows = q.rows(), k = q.cols();
  const CublasScaleLayout layout = cublas_scale_layout(q.granularity, rows, k);
  Tensor out = Tensor::zeros({layout.outer, layout.inner}, DType::kF32);
  const float* src = q.scales.data<float>();
  float* dst = out.data<float>();
  const int64_t src_rows = q.scales.dim(0), src_cols = q.scales.dim(1);
  if (q.granularity == ScaleGranularity::kTile1x128) {
    // [rows, ⌈K/128⌉] → [⌈K/128⌉, pad4(rows)]: a transpose.
    for (int64_t r = 0; r < src_rows; ++r)
      for (int64_t kb = 0; kb < src_cols; ++kb) dst[kb * layout.inner + r] = src[r * src_cols + kb];
  } else {
    // [⌈rows/128⌉, ⌈K/128⌉] → [⌈rows/128⌉, pad4(⌈K/128⌉)]: rows padded.
    for (int64_t rb = 0; rb < src_rows; ++rb)
      for (int64_t kb = 0; kb < src_cols; ++kb)
        dst[rb * layout.inner + kb] = src[rb * src_cols + kb];
  }
  return out;
}

}  // namespace tandem::kernels
