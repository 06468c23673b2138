// The CUDA side of kernels/fp8.h's block scaling: quantise (1×128 tiles, 128×128 blocks, and the
// transposed 1×128 re-quantisation wgrad needs), dequantise, and pack / unpack the dispatch
// payload, for tensors in device memory, on the
// device's compute stream. The entries in kernels/fp8.h call these for CUDA tensors; results are
// bit-identical to the CPU reference (the scalar arithmetic is kernels/fp8_arith.h's).
#pragma once

#include "kernels/fp8.h"

namespace tandem::kernels::cuda {

BlockScaledFp8 quantize(const Tensor& x, ScaleGranularity granularity,
                        const QuantizeOptions& options, Fp8Stats* stats);
BlockScaledFp8 quantize_transposed(const Tensor& x, const QuantizeOptions& options,
                                   Fp8Stats* stats);
Tensor dequantize(const BlockScaledFp8& q);
// The dispatch payload (kernels/fp8.h): rows of codes then scale bytes, byte for byte the CPU's.
Tensor pack_fp8_rows(const BlockScaledFp8& q);
BlockScaledFp8 unpack_fp8_rows(const Tensor& payload, int64_t cols, Fp8Format format);

}  // namespace tandem::kernels::cuda
