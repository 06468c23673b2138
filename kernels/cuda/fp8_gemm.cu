// FP8 GEMM on cuBLASLt's block scaling. tandem's row-major C[M, N] = A[M, K] · B[N, K]ᵀ is, in
// cuBLAS's column-major terms, Cᵀ (N×M, ld N) = op(B) · op(A) with B's K×N view transposed ("T",
// ld K) and A's K×M view as is ("N", ld K): cuBLASLt's first operand is tandem's B, its second
// tandem's A, both K-contiguous (the TN layout the block-scaled modes require).
#include <cublasLt.h>

#include <map>
#include <mutex>

#include "kernels/cuda/fp8_gemm.h"
#include "kernels/fp8_gemm_plan.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// One cuBLASLt handle and workspace per device, for the process (the runtime context).
struct LtContext {
  cublasLtHandle_t handle = nullptr;
  Tensor workspace;
};

LtContext& lt_context(int device) {
  static std::mutex mutex;
  static std::map<int, LtContext> contexts;
  std::lock_guard lock(mutex);
  LtContext& context = contexts[device];
  if (!context.handle) {
    tandem::cuda::DeviceGuard guard(device);
    TANDEM_CHECK_CUBLAS(cublasLtCreate(&context.handle));
    context.workspace =
        Tensor::empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::kU8, Device::cuda(device));
  }
  return context;
}

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

// RAII for the descriptors of one call.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() { cublasLtMatmulDescDestroy(desc); }
};
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~Layout() { cublasLtMatrixLayoutDestroy(layout); }
};
struct Preference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~Preference() { cublasLtMatmulPreferenceDestroy(preference); }
};

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
  LtContext& lt = lt_context(device.index);
  const Tensor a_scales = cublas_scales(a, plan.a_scales, stream);
  const Tensor b_scales = cublas_scales(b, plan.b_scales, stream);

  MatmulDesc desc;
  TANDEM_CHECK_CUBLAS(cublasLtMatmulDescCreate(&desc.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  auto set = [&](cublasLtMatmulDescAttributes_t attribute, const void* value, size_t size) {
    TANDEM_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.desc, attribute, value, size));
  };
  set(CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose);
  set(CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep);
  const int32_t first_mode = scale_mode(b.granularity), second_mode = scale_mode(a.granularity);
  set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &first_mode, sizeof first_mode);
  set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &second_mode, sizeof second_mode);
  const float* first_scales = b_scales.data<float>();
  const float* second_scales = a_scales.data<float>();
  set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &first_scales, sizeof first_scales);
  set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &second_scales, sizeof second_scales);

  Layout first, second, out;
  TANDEM_CHECK_CUBLAS(
      cublasLtMatrixLayoutCreate(&first.layout, fp8_type(b.format), k, n, plan.ldb));
  TANDEM_CHECK_CUBLAS(
      cublasLtMatrixLayoutCreate(&second.layout, fp8_type(a.format), k, m, plan.lda));
  TANDEM_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&out.layout, CUDA_R_32F, n, m, plan.ldc));

  Preference preference;
  TANDEM_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference.preference));
  TANDEM_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
      preference.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspaceBytes,
      sizeof kWorkspaceBytes));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  TANDEM_CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(lt.handle, desc.desc, first.layout,
                                                     second.layout, out.layout, out.layout,
                                                     preference.preference, 1, &heuristic, &found));
  TANDEM_CHECK(found > 0, "fp8_gemm on ", device.to_string(), ": cuBLASLt has no algorithm for m ",
               m, " n ", n, " k ", k, " with ", a.format == Fp8Format::kE4M3 ? "e4m3" : "e5m2",
               " x ", b.format == Fp8Format::kE4M3 ? "e4m3" : "e5m2",
               " block scaling (it needs Hopper, sm_90, and cuBLAS >= 12.9)");
  const float alpha = 1.0f, beta = options.accumulate ? 1.0f : 0.0f;
  TANDEM_CHECK_CUBLAS(cublasLtMatmul(lt.handle, desc.desc, &alpha, b.codes.raw_data(), first.layout,
                                     a.codes.raw_data(), second.layout, &beta, c.raw_data(),
                                     out.layout, c.raw_data(), out.layout, &heuristic.algo,
                                     lt.workspace.raw_data(), kWorkspaceBytes, stream));
}

}  // namespace tandem::kernels::cuda
