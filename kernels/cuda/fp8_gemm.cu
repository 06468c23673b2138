// FP8 GEMM on cuBLASLt's block scaling. tandem's row-major C[M, N] = A[M, K] · B[N, K]ᵀ is, in
// cuBLAS's column-major terms, Cᵀ (N×M, ld N) = op(B) · op(A) with B's K×N view transposed ("T",
// ld K) and A's K×M view as is ("N", ld K): cuBLASLt's first operand is tandem's B, its second
// tandem's A, both K-contiguous (the TN layout the block-scaled modes require).
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/fp8_gemm_plan.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

// tandem's scales into cuBLASLt's layout, zero-padded: 1×128 [rows, kb] → [kb, pad4(rows)];
// 128×128 [rb, kb] → [rb, pad4(kb)].
__global__ void cublas_scales_kernel(const float* __restrict__ in, int64_t in_rows, int64_t in_cols,
                                     bool transpose, int64_t out_outer, int64_t out_inner,
                                     float* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < out_outer * out_inner; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = i / out_inner, j = i % out_inner;
    const int64_t row = transpose ? j : o, col = transpose ? o : j;
    out[i] = row < in_rows && col < in_cols ? in[row * in_cols + col] : 0.0f;
  }
}

Tensor cublas_scales(const BlockScaledFp8& q, const CublasScaleLayout& layout,
                     cudaStream_t stream) {
  Tensor out = Tensor::empty({layout.outer, layout.inner}, DType::kF32, q.scales.device());
  const int64_t n = layout.elements(), threads = 256;
  const auto grid = static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  cublas_scales_kernel<<<grid, threads, 0, stream>>>(
      q.scales.data<float>(), q.scales.dim(0), q.scales.dim(1),
      q.granularity == ScaleGranularity::kTile1x128, layout.outer, layout.inner, out.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  return out;
}

cudaDataType_t fp8_type(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
}

int32_t scale_mode(ScaleGranularity granularity) {
  return granularity == ScaleGranularity::kTile1x128 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                                     : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
}

}  // namespace

void fp8_gemm(const BlockScaledFp8& a, const BlockScaledFp8& b, Tensor& c,
              const Fp8GemmOptions& options) {
  TANDEM_CHECK(options.accumulator_mantissa_bits == 0 && options.promote_every_k,
               "fp8_gemm on CUDA: the accumulator emulation exists on the CPU only");
  TANDEM_CHECK(a.granularity == ScaleGranularity::kTile1x128,
               "fp8_gemm: A must be 1x128-scaled along K");
  TANDEM_CHECK(!(a.format == Fp8Format::kE5M2 && b.format == Fp8Format::kE5M2),
               "fp8_gemm on CUDA: cuBLASLt has no e5m2 x e5m2 matmul; quantise one side e4m3");
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  TANDEM_CHECK(b.cols() == k, "fp8_gemm: A is ", m, "x", k, " but B is ", b.rows(), "x", b.cols(),
               " (both are [rows, K])");
  check_shape(c, {m, n}, "fp8_gemm output");
  check_dtype(c, DType::kF32, "fp8_gemm output");
  const Device device = c.device();
  if (m == 0 || n == 0) return;
  if (!options.accumulate && k == 0) {
    c.zero_();
    return;
  }
  // cuBLAS's operands: first = tandem's B (N rows), second = tandem's A (M rows).
  const Fp8GemmPlan plan = plan_fp8_gemm(m, n, k, a.granularity, b.granularity);
  tandem::cuda::DeviceGuard guard(device.index);
  const cudaStream_t stream = tandem::cuda::compute_stream(device.index).handle();
  const Tensor a_scales = cublas_scales(a, plan.a_scales, stream);
  const Tensor b_scales = cublas_scales(b, plan.b_scales, stream);

  LtMatmulDesc desc(CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep);
  const int32_t first_mode = scale_mode(b.granularity), second_mode = scale_mode(a.granularity);
  desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &first_mode, sizeof first_mode);
  desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &second_mode, sizeof second_mode);
  const float* first_scales = b_scales.data<float>();
  const float* second_scales = a_scales.data<float>();
  desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &first_scales, sizeof first_scales);
  desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &second_scales, sizeof second_scales);
  const LtLayout first(fp8_type(b.format), k, n, plan.ldb);
  const LtLayout second(fp8_type(a.format), k, m, plan.lda);
  const LtLayout out(CUDA_R_32F, n, m, plan.ldc);
  lt_matmul(device.index, desc, b.codes.raw_data(), first, a.codes.raw_data(), second, c.raw_data(),
            out, 1.0f, options.accumulate ? 1.0f : 0.0f,
            detail::concat("fp8_gemm m ", m, " n ", n, " k ", k, " with ",
                           a.format == Fp8Format::kE4M3 ? "e4m3" : "e5m2", " x ",
                           b.format == Fp8Format::kE4M3 ? "e4m3" : "e5m2",
                           " block scaling (it needs Hopper, sm_90, and cuBLAS >= 12.9)"));
}

}  // namespace tandem::kernels::cuda
