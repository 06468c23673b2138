// Routing on the GPU, one thread per token as the CPU reference walks it: sigmoid affinities,
// the node limit's group scores (sum of each group's two best biased scores, ties to the lower
// group), selection by insertion on biased scores (ties to the lower expert), gates normalised
// over the selection; the backward through the normalisation and the sigmoid.
#include "kernels/cuda/router.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 128;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

__global__ void router_forward_kernel(const float* logits, const float* bias, int64_t n, int64_t e,
                                      int64_t top_k, int64_t groups, int64_t max_groups,
                                      float* affinity, int32_t* expert_ids, float* gate_weights) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float* a = affinity + i * e;
  for (int64_t x = 0; x < e; ++x) a[x] = 1.0f / (1.0f + expf(-logits[i * e + x]));
  const bool limited = max_groups > 0 && max_groups < groups;
  const int64_t per_group = limited ? e / groups : e;
  uint64_t allowed_groups = ~uint64_t{0};
  if (limited) {
    float score[kMaxExpertGroups];
    for (int64_t g = 0; g < groups; ++g) {
      float best = -INFINITY, second = -INFINITY;
      for (int64_t x = g * per_group; x < (g + 1) * per_group; ++x) {
        const float s = a[x] + bias[x];
        if (s > best) {
          second = best;
          best = s;
        } else if (s > second) {
          second = s;
        }
      }
      score[g] = per_group > 1 ? best + second : best;
    }
    // The max_groups best groups, earlier ones first among equals (the CPU's stable sort).
    allowed_groups = 0;
    for (int64_t pick = 0; pick < max_groups; ++pick) {
      int64_t chosen = -1;
      for (int64_t g = 0; g < groups; ++g)
        if (!(allowed_groups >> g & 1) && (chosen < 0 || score[g] > score[chosen])) chosen = g;
      allowed_groups |= uint64_t{1} << chosen;
    }
  }
  int32_t sel[kMaxTopK];
  int64_t chosen = 0;
  for (int64_t x = 0; x < e; ++x) {
    if (limited && !(allowed_groups >> (x / per_group) & 1)) continue;
    const float s = a[x] + bias[x];
    int64_t pos = chosen;
    while (pos > 0 && a[sel[pos - 1]] + bias[sel[pos - 1]] < s) {
      if (pos < top_k) sel[pos] = sel[pos - 1];
      --pos;
    }
    if (pos < top_k) {
      sel[pos] = static_cast<int32_t>(x);
      chosen = chosen + 1 < top_k ? chosen + 1 : top_k;
    }
  }
  float total = 0;
  for (int64_t j = 0; j < top_k; ++j) total += a[sel[j]];
  for (int64_t j = 0; j < top_k; ++j) {
    expert_ids[i * top_k + j] = sel[j];
    gate_weights[i * top_k + j] = a[sel[j]] / total;
  }
}

__global__ void router_backward_kernel(const float* dgate_weights, const float* affinity,
                                       const int32_t* expert_ids, int64_t n, int64_t e,
                                       int64_t top_k, float* dlogits) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float* a = affinity + i * e;
  const int32_t* sel = expert_ids + i * top_k;
  const float* dw = dgate_weights + i * top_k;
  float* dz = dlogits + i * e;
  for (int64_t x = 0; x < e; ++x) dz[x] = 0;
  float total = 0, weighted = 0;
  for (int64_t j = 0; j < top_k; ++j) total += a[sel[j]];
  for (int64_t j = 0; j < top_k; ++j) weighted += dw[j] * a[sel[j]] / total;
  for (int64_t j = 0; j < top_k; ++j) {
    const float am = a[sel[j]];
    dz[sel[j]] = (dw[j] - weighted) / total * am * (1.0f - am);
  }
}

__global__ void add_kernel(const float* delta, int64_t n, float* bias) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) bias[i] += delta[i];
}

}  // namespace

void router_forward(const Tensor& logits, const Tensor& bias, int64_t top_k, Tensor& affinity,
                    Tensor& expert_ids, Tensor& gate_weights, RouteLimit limit) {
  require_fp32({&logits, &bias, &affinity, &gate_weights}, "router_forward");
  TANDEM_CHECK(top_k <= kMaxTopK, "router_forward on CUDA: top_k ", top_k, " exceeds ", kMaxTopK,
               "; lower model.top_k");
  const bool limited = limit.max_groups > 0 && limit.max_groups < limit.groups;
  TANDEM_CHECK(!limited || limit.groups <= kMaxExpertGroups,
               "router_forward on CUDA: ", limit.groups, " expert groups exceed ", kMaxExpertGroups,
               "; lower model.n_expert_groups");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  if (n == 0) return;
  const int index = logits.device().index;
  tandem::cuda::DeviceGuard guard(index);
  router_forward_kernel<<<blocks_for(n), kThreads, 0,
                          tandem::cuda::compute_stream(index).handle()>>>(
      logits.data<float>(), bias.data<float>(), n, e, top_k, limit.groups, limit.max_groups,
      affinity.data<float>(), expert_ids.data<int32_t>(), gate_weights.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void router_backward(const Tensor& dgate_weights, const Tensor& affinity, const Tensor& expert_ids,
                     Tensor& dlogits) {
  require_fp32({&dgate_weights, &affinity, &dlogits}, "router_backward");
  const int64_t n = affinity.dim(0), e = affinity.dim(1), top_k = expert_ids.dim(1);
  if (n == 0) return;
  const int index = affinity.device().index;
  tandem::cuda::DeviceGuard guard(index);
  router_backward_kernel<<<blocks_for(n), kThreads, 0,
                           tandem::cuda::compute_stream(index).handle()>>>(
      dgate_weights.data<float>(), affinity.data<float>(), expert_ids.data<int32_t>(), n, e, top_k,
      dlogits.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void update_router_bias(const std::vector<int64_t>& load, double rate, Tensor& bias) {
  require_fp32({&bias}, "update_router_bias");
  const int64_t e = static_cast<int64_t>(load.size());
  if (e == 0) return;
  double mean = 0;
  for (int64_t count : load) mean += static_cast<double>(count) / e;
  Tensor delta = Tensor::empty({e}, DType::kF32);
  for (int64_t x = 0; x < e; ++x) {
    const double diff = mean - static_cast<double>(load[x]);
    delta.data<float>()[x] = static_cast<float>(rate * ((diff > 0) - (diff < 0)));
  }
  const Tensor on_device = delta.to(bias.device());
  const int index = bias.device().index;
  tandem::cuda::DeviceGuard guard(index);
  add_kernel<<<blocks_for(e), kThreads, 0, tandem::cuda::compute_stream(index).handle()>>>(
      on_device.data<float>(), e, bias.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
