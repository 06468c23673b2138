// Token permutation for MoE: group the (token, slot) pairs by expert so each expert sees a
// contiguous block of rows, and scatter expert outputs back, weighted by the gates. No token is
// dropped: every expert takes all the rows routed to it.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/tensor.h"

namespace tandem::kernels {

struct PermutePlan {
  int64_t n_tokens = 0;
  int64_t top_k = 0;
  std::vector<int64_t> expert_offsets;  // E + 1 entries; expert e owns rows [off[e], off[e+1])
  // For ids on the CPU (empty for ids on a GPU, whose plan stays there):
  std::vector<int64_t> row_of_slot;   // [N·k]: permuted row of (token t, slot j) at t·k + j
  std::vector<int64_t> token_of_row;  // [N·k]: source token of each permuted row
  // For ids on a GPU (undefined for ids on the CPU): the same two indices as int64 tensors on
  // the ids' device, made there.
  Tensor row_of_slot_on_device, token_of_row_on_device;
  int64_t rows_for_expert(int64_t e) const { return expert_offsets[e + 1] - expert_offsets[e]; }
};

// Stable sort of (token, slot) by expert id: within an expert, tokens keep their order (a
// counting sort on the CPU, CUB's radix sort on a GPU: the same plan). Only expert_offsets is on
// the host for ids on a GPU.
PermutePlan make_permute_plan(const Tensor& expert_ids, int64_t n_experts);

// dst[i] = src[index[i]] for every row i of dst (rows of any dtype and shape).
void gather_rows(const Tensor& src, const std::vector<int64_t>& index, Tensor& dst);
// xp[r] = x[token_of_row[r]]; x [N, d], xp [N·k, d].
void permute_rows(const Tensor& x, const PermutePlan& plan, Tensor& xp);
// dx[t] = Σ_j dxp[row_of_slot[t·k+j]] (overwrites dx).
void permute_rows_backward(const Tensor& dxp, const PermutePlan& plan, Tensor& dx);
// y[t] = Σ_j w[t, j] · yp[row_of_slot[t·k+j]] (overwrites y).
void unpermute_weighted(const Tensor& yp, const Tensor& gate_weights, const PermutePlan& plan,
                        Tensor& y);
// The same with the permuted rows found through pointers (rows[r] is permuted row r, d elements
// of row_dtype, possibly in another process's memory); rows of bf16 are summed in fp32. y and the
// gate weights are fp32 or fp64 like each other, and rows of fp32 need y of fp32.
void unpermute_weighted_rows(const std::vector<const void*>& rows, DType row_dtype,
                             const Tensor& gate_weights, const PermutePlan& plan, Tensor& y);
// dyp[row(t,j)] = w[t,j]·dy[t]; dgate_weights[t,j] = dy[t]·yp[row(t,j)] (both overwritten).
void unpermute_weighted_backward(const Tensor& dy, const Tensor& yp, const Tensor& gate_weights,
                                 const PermutePlan& plan, Tensor& dyp, Tensor& dgate_weights);

}  // namespace tandem::kernels
