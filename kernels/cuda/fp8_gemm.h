// The CUDA side of kernels/fp8.h's fp8_gemm: C = A · Bᵀ on cuBLASLt's block-scaled FP8 matmul
// (Hopper, cuBLAS ≥ 12.9), A 1×128-scaled and B 1×128- or 128×128-scaled along K, FP32 compute and
// output. The plan (kernels/fp8_gemm_plan.h) is made on the host; the scales are rewritten into
// cuBLASLt's layout by a kernel first. fp8_grouped_gemm's expert loop calls this per expert.
#pragma once

#include "kernels/fp8.h"

namespace tandem::kernels::cuda {

void fp8_gemm(const BlockScaledFp8& a, const BlockScaledFp8& b, Tensor& c,
              const Fp8GemmOptions& options);

}  // namespace tandem::kernels::cuda
