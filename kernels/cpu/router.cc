// Sigmoid top-k routing with selection bias, its backward, and the balancing bias update.
#include "kernels/router.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/router.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void router_forward(const Tensor& logits, const Tensor& bias, int64_t top_k, Tensor& affinity,
                    Tensor& expert_ids, Tensor& gate_weights, RouteLimit limit) {
  TANDEM_PROFILE_SCOPE("router_forward");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  TANDEM_CHECK(top_k >= 1 && top_k <= e, "router: top_k ", top_k, " with ", e, " experts");
  check_shape(bias, {e}, "router bias");
  check_shape(affinity, {n, e}, "router affinity");
  check_shape(expert_ids, {n, top_k}, "router expert ids");
  check_dtype(expert_ids, DType::kI32, "router expert ids");
  check_shape(gate_weights, {n, top_k}, "router gate weights");
  check_same_dtype({&logits, &bias, &affinity, &gate_weights}, "router_forward");
  const bool limited = limit.max_groups > 0 && limit.max_groups < limit.groups;
  if (limited) {
    TANDEM_CHECK(e % limit.groups == 0, "router: ", e, " experts do not split into ", limit.groups,
                 " groups");
    TANDEM_CHECK(top_k <= limit.max_groups * (e / limit.groups), "router: top_k ", top_k,
                 " exceeds the experts of ", limit.max_groups, " groups");
  }
  const int64_t per_group = limited ? e / limit.groups : e;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&logits, &bias, &affinity, &expert_ids, &gate_weights}, "router_forward").type ==
      DeviceType::kCUDA)
    return cuda::router_forward(logits, bias, top_k, affinity, expert_ids, gate_weights, limit);
#endif
  require_cpu({&logits, &bias, &affinity, &expert_ids, &gate_weights}, "router_forward");
  dispatch_float(logits.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* z = logits.data<T>();
    const T* bs = bias.data<T>();
    T* a = affinity.data<T>();
    int32_t* ids = expert_ids.data<int32_t>();
    T* w = gate_weights.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T* ai = a + i * e;
      for (int64_t x = 0; x < e; ++x) ai[x] = T(1) / (T(1) + std::exp(-z[i * e + x]));
      // Node limit: keep the max_groups groups whose two best biased scores sum highest.
      std::vector<char> allowed;  // only built when routing is node-limited
      if (limited) {
        std::vector<std::pair<T, int64_t>> group_score(limit.groups);
        for (int64_t g = 0; g < limit.groups; ++g) {
          T best = -INFINITY, second = -INFINITY;
          for (int64_t x = g * per_group; x < (g + 1) * per_group; ++x) {
            const T score = ai[x] + bs[x];
            if (score > best)
              second = best, best = score;
            else if (score > second)
              second = score;
          }
          group_score[g] = {per_group > 1 ? best + second : best, g};
        }
        std::stable_sort(group_score.begin(), group_score.end(),
                         [](const auto& a, const auto& b) { return a.first > b.first; });
        allowed.assign(e, 0);
        for (int64_t j = 0; j < limit.max_groups; ++j) {
          const int64_t g = group_score[j].second;
          std::fill(allowed.begin() + g * per_group, allowed.begin() + (g + 1) * per_group, 1);
        }
      }
      // Selection by partial insertion sort on biased scores; k is small (DeepSeek-V3: 8 of 256).
      int32_t* sel = ids + i * top_k;
      int64_t chosen = 0;
      for (int64_t x = 0; x < e; ++x) {
        if (limited && !allowed[x]) continue;
        const T score = ai[x] + bs[x];
        int64_t pos = chosen;
        while (pos > 0 && ai[sel[pos - 1]] + bs[sel[pos - 1]] < score) {
          if (pos < top_k) sel[pos] = sel[pos - 1];
          --pos;
        }
        if (pos < top_k) {
          sel[pos] = static_cast<int32_t>(x);
          chosen = std::min(chosen + 1, top_k);
        }
      }
      T total = 0;
      for (int64_t j = 0; j < top_k; ++j) total += ai[sel[j]];
      for (int64_t j = 0; j < top_k; ++j) w[i * top_k + j] = ai[sel[j]] / total;
    }
  });
}

void router_backward(const Tensor& dgate_weights, const Tensor& affinity, const Tensor& expert_ids,
                     Tensor& dlogits) {
  TANDEM_PROFILE_SCOPE("router_backward");
  const int64_t n = affinity.dim(0), e = affinity.dim(1), top_k = expert_ids.dim(1);
  check_shape(dgate_weights, {n, top_k}, "router gate-weight gradient");
  check_shape(dlogits, {n, e}, "router logit gradient");
  check_shape(expert_ids, {n, top_k}, "router expert ids");
  check_dtype(expert_ids, DType::kI32, "router expert ids");
  check_same_dtype({&dgate_weights, &affinity, &dlogits}, "router_backward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dgate_weights, &affinity, &expert_ids, &dlogits}, "router_backward").type ==
      DeviceType::kCUDA)
    return cuda::router_backward(dgate_weights, affinity, expert_ids, dlogits);
#endif
  require_cpu({&dgate_weights, &affinity, &expert_ids, &dlogits}, "router_backward");
  dispatch_float(affinity.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* dw = dgate_weights.data<T>();
    const T* a = affinity.data<T>();
    const int32_t* ids = expert_ids.data<int32_t>();
    T* dz = dlogits.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* ai = a + i * e;
      const int32_t* sel = ids + i * top_k;
      std::fill(dz + i * e, dz + (i + 1) * e, T(0));
      // w_j = a_j / S with S = Σ selected a: dw_j/da_m = (δ_jm − w_j)/S.
      T total = 0, weighted = 0;
      for (int64_t j = 0; j < top_k; ++j) total += ai[sel[j]];
      for (int64_t j = 0; j < top_k; ++j) weighted += dw[i * top_k + j] * ai[sel[j]] / total;
      for (int64_t j = 0; j < top_k; ++j) {
        const T am = ai[sel[j]];
        const T da = (dw[i * top_k + j] - weighted) / total;
        dz[i * e + sel[j]] = da * am * (T(1) - am);
      }
    }
  });
}

void count_expert_load(const Tensor& expert_ids, std::vector<int64_t>& load) {
  TANDEM_PROFILE_SCOPE("count_expert_load");
  // Expert ids on a GPU are counted from a host copy: the plan and the bias update need the
  // counts on the host.
  const Tensor host_ids =
      expert_ids.device().type == DeviceType::kCPU ? expert_ids : expert_ids.to(Device::cpu());
  const int32_t* ids = host_ids.data<int32_t>();
  for (int64_t i = 0; i < expert_ids.numel(); ++i) {
    TANDEM_CHECK(ids[i] >= 0 && static_cast<size_t>(ids[i]) < load.size(), "expert id ", ids[i],
                 " out of range");
    ++load[ids[i]];
  }
}

void update_router_bias(const std::vector<int64_t>& load, double rate, Tensor& bias) {
  TANDEM_PROFILE_SCOPE("update_router_bias");
  const int64_t e = static_cast<int64_t>(load.size());
  check_shape(bias, {e}, "router bias");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&bias}, "update_router_bias").type == DeviceType::kCUDA)
    return cuda::update_router_bias(load, rate, bias);
#endif
  require_cpu({&bias}, "update_router_bias");
  double mean = 0;
  for (int64_t count : load) mean += static_cast<double>(count) / e;
  dispatch_float(bias.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* b = bias.data<T>();
    for (int64_t x = 0; x < e; ++x) {
      const double diff = mean - static_cast<double>(load[x]);
      b[x] += static_cast<T>(rate * ((diff > 0) - (diff < 0)));
    }
  });
}

}  // namespace tandem::kernels
