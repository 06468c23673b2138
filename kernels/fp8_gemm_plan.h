// Plans for cuBLASLt's block-scaled FP8 GEMMs (cuBLAS ≥ 12.9, Hopper sm_90), made and checked on
// the host before any device call, so that CI (no GPU) tests them. Facts from NVIDIA's cuBLASLt
// documentation: scale modes CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F (1×128 along K) and
// ..._BLK128x128_32F; 1D×1D (wgrad), 1D×2D and 2D×1D (fprop, dgrad) are supported and 2D×2D is
// not; only the TN layout (both operands K-contiguous); leading dimensions multiples of 16.
// Scale tensors (fp32, the last index contiguous): 1D [⌈K/128⌉, pad4(rows)], 2D
// [⌈rows/128⌉, pad4(⌈K/128⌉)]. tandem's BlockScaledFp8 keeps 1×128 scales as [rows, ⌈K/128⌉]
// (and 128×128 as [⌈rows/128⌉, ⌈K/128⌉]): to_cublas_scales converts, zero-padding.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/fp8.h"

namespace tandem::kernels {

struct CublasScaleLayout {
  int64_t outer = 0, inner = 0;  // [outer][inner] fp32
  int64_t elements() const { return outer * inner; }
};

// Rounds up to a multiple of 4 (cuBLASLt's padding of a scale tensor's contiguous extent).
constexpr int64_t pad4(int64_t n) {
  return (n + 3) / 4 * 4;
}

CublasScaleLayout cublas_scale_layout(ScaleGranularity granularity, int64_t rows, int64_t k);

// C[M, N] = A[M, K] · B[N, K]ᵀ with A and B block-scaled along K.
struct Fp8GemmPlan {
  int64_t m = 0, n = 0, k = 0;
  ScaleGranularity a_granularity, b_granularity;
  CublasScaleLayout a_scales, b_scales;
  int64_t lda = 0, ldb = 0, ldc = 0;  // in elements, of the column-major view cuBLASLt takes
};

// Refuses (naming the shape and what cuBLASLt needs) 2D×2D scaling and K or N not multiples of 16.
Fp8GemmPlan plan_fp8_gemm(int64_t m, int64_t n, int64_t k, ScaleGranularity a, ScaleGranularity b);

// The expert loop (no block-scaled grouped GEMM before cuBLAS 13.4): one plan per expert with
// rows, the experts without rows skipped; each expert's A scales at its own offset of one packed
// buffer, since a 1D scale tensor pads its expert's row count to 4.
struct GroupedFp8GemmPlan {
  std::vector<int64_t> experts;          // those with rows, in order
  std::vector<Fp8GemmPlan> gemms;        // one per such expert
  std::vector<int64_t> a_scale_offsets;  // elements into the packed A-scale buffer
  int64_t a_scale_elements = 0;          // the buffer's size
};
GroupedFp8GemmPlan plan_grouped_fp8_gemm(const std::vector<int64_t>& offsets, int64_t n, int64_t k,
                                         ScaleGranularity b);

// tandem's scales of q in cuBLASLt's layout (a CPU tensor, padding zero): the reference of the
// device conversion.
Tensor to_cublas_scales(const BlockScaledFp8& q);

}  // namespace tandem::kernels
