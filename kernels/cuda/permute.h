// The CUDA side of kernels/permute.h on device tensors: the plan, row gathers by an index on the
// device, the scatter-add of the permutation's backward, and the gate-weighted un-permutation with
// its backward (fp32), each over the plan's device indices.
#pragma once

#include "kernels/permute.h"

namespace tandem::kernels::cuda {

// The plan from int32 ids [N, k] on the device: the device indices and the host offsets (the
// host index vectors stay empty); ids out of range are refused, with how many.
PermutePlan make_permute_plan(const Tensor& expert_ids, int64_t n_experts);

// dst[i] = src[index[i]]: index is int64 on the device, rows of any dtype.
void gather_rows(const Tensor& src, const Tensor& index, Tensor& dst);
void permute_rows_backward(const Tensor& dxp, const PermutePlan& plan, Tensor& dx);
void unpermute_weighted(const Tensor& yp, const Tensor& gate_weights, const PermutePlan& plan,
                        Tensor& y);
void unpermute_weighted_backward(const Tensor& dy, const Tensor& yp, const Tensor& gate_weights,
                                 const PermutePlan& plan, Tensor& dyp, Tensor& dgate_weights);

}  // namespace tandem::kernels::cuda
