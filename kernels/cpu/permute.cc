// Grouping routed token copies by expert and scattering expert outputs back.
#include "kernels/permute.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/permute.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

PermutePlan make_permute_plan(const Tensor& expert_ids, int64_t n_experts) {
  TANDEM_PROFILE_SCOPE("make_permute_plan");
  check_dtype(expert_ids, DType::kI32, "permute expert ids");
  TANDEM_CHECK(expert_ids.ndim() == 2, "permute expert ids: expected [tokens, top_k], got ",
               shape_string(expert_ids.shape()));
#ifdef TANDEM_HAVE_CUDA
  if (expert_ids.device().type == DeviceType::kCUDA)
    return cuda::make_permute_plan(expert_ids, n_experts);
#endif
  require_cpu({&expert_ids}, "make_permute_plan");
  PermutePlan plan;
  plan.n_tokens = expert_ids.dim(0);
  plan.top_k = expert_ids.dim(1);
  const int64_t slots = plan.n_tokens * plan.top_k;
  const int32_t* ids = expert_ids.data<int32_t>();
  plan.expert_offsets.assign(n_experts + 1, 0);
  for (int64_t s = 0; s < slots; ++s) {
    TANDEM_CHECK(ids[s] >= 0 && ids[s] < n_experts, "expert id ", ids[s], " of slot ", s,
                 " is outside [0, ", n_experts, ")");
    ++plan.expert_offsets[ids[s] + 1];
  }
  for (int64_t e = 0; e < n_experts; ++e) plan.expert_offsets[e + 1] += plan.expert_offsets[e];
  std::vector<int64_t> next(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  plan.row_of_slot.resize(slots);
  plan.token_of_row.resize(slots);
  for (int64_t s = 0; s < slots; ++s) {
    const int64_t row = next[ids[s]]++;
    plan.row_of_slot[s] = row;
    plan.token_of_row[row] = s / plan.top_k;
  }
  return plan;
}

void gather_rows(const Tensor& src, const std::vector<int64_t>& index, Tensor& dst) {
  TANDEM_PROFILE_SCOPE("gather_rows");
  const int64_t rows = static_cast<int64_t>(index.size());
  TANDEM_CHECK(dst.ndim() >= 1 && dst.dim(0) == rows, "gather_rows: ", rows,
               " indices for an output of shape ", shape_string(dst.shape()));
  check_same_dtype({&src, &dst}, "gather_rows");
  const int64_t src_rows = src.ndim() ? src.dim(0) : 0;
  const size_t row_bytes = rows > 0 ? dst.nbytes() / rows : 0;
  TANDEM_CHECK(rows == 0 || src_rows * row_bytes == src.nbytes(), "gather_rows: rows of ",
               row_bytes, " bytes from a source of shape ", shape_string(src.shape()));
  for (int64_t i : index)  // checked before the parallel loop, which must not throw
    TANDEM_CHECK(i >= 0 && i < src_rows, "gather_rows: index ", i, " outside a source of ",
                 src_rows, " rows");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&src, &dst}, "gather_rows").type == DeviceType::kCUDA) {
    Tensor host = Tensor::empty({rows}, DType::kI64);
    std::copy(index.begin(), index.end(), host.data<int64_t>());
    return cuda::gather_rows(src, host.to(dst.device()), dst);
  }
#endif
  require_cpu({&src, &dst}, "gather_rows");
  const char* from = static_cast<const char*>(src.raw_data());
  char* to = static_cast<char*>(dst.raw_data());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(to + r * row_bytes, from + index[r] * row_bytes, row_bytes);
}

void permute_rows(const Tensor& x, const PermutePlan& plan, Tensor& xp) {
  const int64_t d = x.dim(1);
  check_shape(x, {plan.n_tokens, d}, "permute input");
  check_shape(xp, {plan.n_tokens * plan.top_k, d}, "permute output");
  check_same_dtype({&x, &xp}, "permute_rows");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x, &xp}, "permute_rows").type == DeviceType::kCUDA) {
    TANDEM_CHECK(plan.token_of_row_on_device.defined(),
                 "permute_rows on CUDA needs a plan made from expert ids on the device");
    return cuda::gather_rows(x, plan.token_of_row_on_device, xp);
  }
#endif
  require_cpu({&x, &xp}, "permute_rows");
  gather_rows(x, plan.token_of_row, xp);
}

void permute_rows_backward(const Tensor& dxp, const PermutePlan& plan, Tensor& dx) {
  TANDEM_PROFILE_SCOPE("permute_rows_backward");
  const int64_t d = dx.dim(1), k = plan.top_k;
  check_shape(dxp, {plan.n_tokens * k, d}, "permute output gradient");
  check_shape(dx, {plan.n_tokens, d}, "permute input gradient");
  check_same_dtype({&dx, &dxp}, "permute_rows_backward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dxp, &dx}, "permute_rows_backward").type == DeviceType::kCUDA)
    return cuda::permute_rows_backward(dxp, plan, dx);
#endif
  require_cpu({&dxp, &dx}, "permute_rows_backward");
  dispatch_float(dx.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* g = dxp.data<T>();
    T* out = dx.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < plan.n_tokens; ++t) {
      T* o = out + t * d;
      std::memset(o, 0, d * sizeof(T));
      for (int64_t j = 0; j < k; ++j) {
        const T* row = g + plan.row_of_slot[t * k + j] * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) o[c] += row[c];
      }
    }
  });
}

void unpermute_weighted(const Tensor& yp, const Tensor& gate_weights, const PermutePlan& plan,
                        Tensor& y) {
  const int64_t d = y.dim(1), k = plan.top_k;
  check_shape(yp, {plan.n_tokens * k, d}, "unpermute input");
  check_shape(gate_weights, {plan.n_tokens, k}, "unpermute gate weights");
  check_shape(y, {plan.n_tokens, d}, "unpermute output");
  check_same_dtype({&yp, &gate_weights, &y}, "unpermute_weighted");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&yp, &gate_weights, &y}, "unpermute_weighted").type == DeviceType::kCUDA)
    return cuda::unpermute_weighted(yp, gate_weights, plan, y);
#endif
  require_cpu({&yp, &gate_weights, &y}, "unpermute_weighted");
  std::vector<const void*> rows(plan.n_tokens * k);
  const size_t row_bytes = d * dtype_size(yp.dtype());
  for (size_t r = 0; r < rows.size(); ++r)
    rows[r] = static_cast<const char*>(yp.raw_data()) + r * row_bytes;
  unpermute_weighted_rows(rows, yp.dtype(), gate_weights, plan, y);
}

void unpermute_weighted_rows(const std::vector<const void*>& rows, DType row_dtype,
                             const Tensor& gate_weights, const PermutePlan& plan, Tensor& y) {
  require_cpu({&gate_weights, &y}, "unpermute_weighted_rows");
  TANDEM_PROFILE_SCOPE("unpermute_weighted_rows");
  const int64_t d = y.dim(1), k = plan.top_k;
  TANDEM_CHECK(static_cast<int64_t>(rows.size()) == plan.n_tokens * k,
               "unpermute_weighted_rows: ", rows.size(), " row pointers for ", plan.n_tokens * k,
               " permuted rows");
  check_shape(gate_weights, {plan.n_tokens, k}, "unpermute gate weights");
  check_shape(y, {plan.n_tokens, d}, "unpermute output");
  check_same_dtype({&gate_weights, &y}, "unpermute_weighted_rows");
  TANDEM_CHECK(row_dtype == y.dtype() || row_dtype == DType::kBF16,
               "unpermute_weighted_rows: rows of ", dtype_name(row_dtype), " into ",
               dtype_name(y.dtype()));
  dispatch_float(y.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* w = gate_weights.data<T>();
    T* out = y.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < plan.n_tokens; ++t) {
      T* o = out + t * d;
      std::memset(o, 0, d * sizeof(T));
      for (int64_t j = 0; j < k; ++j) {
        const void* row = rows[plan.row_of_slot[t * k + j]];
        const T wj = w[t * k + j];
        if (row_dtype == DType::kBF16) {
          const bf16* r = static_cast<const bf16*>(row);
          for (int64_t c = 0; c < d; ++c) o[c] += wj * static_cast<T>(to_float(r[c]));
        } else {
          const T* r = static_cast<const T*>(row);
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) o[c] += wj * r[c];
        }
      }
    }
  });
}

void unpermute_weighted_backward(const Tensor& dy, const Tensor& yp, const Tensor& gate_weights,
                                 const PermutePlan& plan, Tensor& dyp, Tensor& dgate_weights) {
  TANDEM_PROFILE_SCOPE("unpermute_weighted_backward");
  const int64_t d = dy.dim(1), k = plan.top_k;
  check_shape(dy, {plan.n_tokens, d}, "unpermute output gradient");
  check_shape(dyp, {plan.n_tokens * k, d}, "unpermute input gradient");
  check_shape(dgate_weights, {plan.n_tokens, k}, "unpermute gate-weight gradient");
  check_shape(yp, {plan.n_tokens * k, d}, "unpermute input");
  check_shape(gate_weights, {plan.n_tokens, k}, "unpermute gate weights");
  check_same_dtype({&dy, &yp, &gate_weights, &dyp, &dgate_weights}, "unpermute_backward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &yp, &gate_weights, &dyp, &dgate_weights}, "unpermute_weighted_backward")
          .type == DeviceType::kCUDA)
    return cuda::unpermute_weighted_backward(dy, yp, gate_weights, plan, dyp, dgate_weights);
#endif
  require_cpu({&dy, &yp, &gate_weights, &dyp, &dgate_weights}, "unpermute_weighted_backward");
  dispatch_float(dy.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* g = dy.data<T>();
    const T* src = yp.data<T>();
    const T* w = gate_weights.data<T>();
    T* dsrc = dyp.data<T>();
    T* dw = dgate_weights.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < plan.n_tokens; ++t) {
      const T* gt = g + t * d;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t row = plan.row_of_slot[t * k + j];
        const T wj = w[t * k + j];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < d; ++c) {
          dsrc[row * d + c] = wj * gt[c];
          dot += gt[c] * src[row * d + c];
        }
        dw[t * k + j] = dot;
      }
    }
  });
}

}  // namespace tandem::kernels
