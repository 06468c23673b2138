// The CUDA side of kernels/router.h on fp32 device tensors: sigmoid top-k routing with the
// selection bias and the node limit, its backward, and the balancing bias update.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/router.h"

namespace tandem::kernels::cuda {

// The largest top_k and number of expert groups the routing kernel keeps in registers.
constexpr int64_t kMaxTopK = 32;
constexpr int64_t kMaxExpertGroups = 64;

void router_forward(const Tensor& logits, const Tensor& bias, int64_t top_k, Tensor& affinity,
                    Tensor& expert_ids, Tensor& gate_weights, RouteLimit limit);
void router_backward(const Tensor& dgate_weights, const Tensor& affinity, const Tensor& expert_ids,
                     Tensor& dlogits);
// The load is counted on the host (the permutation plan and the bias update need it there).
void update_router_bias(const std::vector<int64_t>& load, double rate, Tensor& bias);

}  // namespace tandem::kernels::cuda
