// The MoE router of DeepSeek-V3: sigmoid affinities, top-k chosen on affinity + per-expert bias
// (the bias steers selection only), gate weights = selected affinities normalised to sum 1, and the
// auxiliary-loss-free bias update from the observed expert load.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// Node-limited routing (DeepSeek-V3): experts form `groups` contiguous equal groups (one per node
// under contiguous placement); each token first picks the max_groups groups with the highest sum
// of their top-2 biased scores, then its top-k among those groups' experts. max_groups = 0: off.
struct RouteLimit {
  int64_t groups = 1;
  int64_t max_groups = 0;
};

// logits [N, E] → affinity [N, E] = sigmoid(logits); expert_ids int32 [N, k] (by descending
// affinity + bias, ties to the lower id) and gate_weights [N, k]. bias is fp32/fp64 [E].
void router_forward(const Tensor& logits, const Tensor& bias, int64_t top_k, Tensor& affinity,
                    Tensor& expert_ids, Tensor& gate_weights, RouteLimit limit = {});
// dlogits [N, E] (overwritten) from dgate_weights [N, k]; unselected experts get zero.
void router_backward(const Tensor& dgate_weights, const Tensor& affinity, const Tensor& expert_ids,
                     Tensor& dlogits);
// Tokens routed to each expert, added into load (size E).
void count_expert_load(const Tensor& expert_ids, std::vector<int64_t>& load);
// bias[e] += rate · sign(mean load − load[e]): overloaded experts become less likely to be chosen.
void update_router_bias(const std::vector<int64_t>& load, double rate, Tensor& bias);

}  // namespace tandem::kernels
