// Token permutation on the GPU: the plan from expert ids on the device (counts by atomics, their
// scan and a stable radix sort of the slots by expert, on CUB), and one thread block per output
// row (a gather) or per token (the sums over its k slots, in slot order as the CPU reference adds
// them), the threads across the row's columns. Only the E + 1 offsets come back to the host (they
// size the expert GEMMs), with the count of ids out of range.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <limits>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/permute.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 128;

// Rows move as 16-, 4- or 1-byte words, the widest that divides the row size and both tensors'
// addresses.
template <class Word>
__global__ void gather_rows_kernel(const Word* src, const int64_t* index, int64_t words_per_row,
                                   Word* dst) {
  const int64_t row = blockIdx.x;
  const Word* from = src + index[row] * words_per_row;
  Word* to = dst + row * words_per_row;
  for (int64_t w = threadIdx.x; w < words_per_row; w += kThreads) to[w] = from[w];
}

__global__ void permute_backward_kernel(const float* dxp, const int64_t* row_of_slot, int64_t k,
                                        int64_t d, float* dx) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += dxp[row_of_slot[t * k + j] * d + c];
    dx[t * d + c] = sum;
  }
}

__global__ void unpermute_kernel(const float* yp, const float* w, const int64_t* row_of_slot,
                                 int64_t k, int64_t d, float* y) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += w[t * k + j] * yp[row_of_slot[t * k + j] * d + c];
    y[t * d + c] = sum;
  }
}

__global__ void unpermute_backward_kernel(const float* dy, const float* yp, const float* w,
                                          const int64_t* row_of_slot, int64_t k, int64_t d,
                                          float* dyp, float* dw) {
  const int64_t t = blockIdx.x;
  for (int64_t j = 0; j < k; ++j) {
    const int64_t row = row_of_slot[t * k + j];
    const float wj = w[t * k + j];
    float dot = 0;
    for (int64_t c = threadIdx.x; c < d; c += kThreads) {
      dyp[row * d + c] = wj * dy[t * d + c];
      dot += dy[t * d + c] * yp[row * d + c];
    }
    dot = block_sum<kThreads>(dot);
    if (threadIdx.x == 0) dw[t * k + j] = dot;
  }
}

// counts[e] += slots routed to e (counts[n_experts] stays 0 for the scan; counts[n_experts + 1]
// counts ids outside [0, n_experts)); slot_index[s] = s, the values the sort carries.
__global__ void count_experts_kernel(const int32_t* ids, int64_t slots, int64_t n_experts,
                                     unsigned long long* counts, int64_t* slot_index) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < slots;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = ids[s];
    atomicAdd(&counts[e >= 0 && e < n_experts ? e : n_experts + 1], 1ull);
    slot_index[s] = s;
  }
}

// Permuted row r holds slot sorted_slot[r]: its token, and the slot's row the other way.
__global__ void plan_indices_kernel(const int64_t* sorted_slot, int64_t slots, int64_t top_k,
                                    int64_t* token_of_row, int64_t* row_of_slot) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < slots;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t slot = sorted_slot[r];
    token_of_row[r] = slot / top_k;
    row_of_slot[slot] = r;
  }
}

unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
}

cudaStream_t stream_of(const Tensor& t) {
  return tandem::cuda::compute_stream(t.device().index).handle();
}

void require_device_plan(const PermutePlan& plan, const char* kernel) {
  TANDEM_CHECK(plan.row_of_slot_on_device.defined() && plan.token_of_row_on_device.defined(),
               kernel, " on CUDA needs a plan made from expert ids on the device");
}

}  // namespace

PermutePlan make_permute_plan(const Tensor& expert_ids, int64_t n_experts) {
  PermutePlan plan;
  plan.n_tokens = expert_ids.dim(0);
  plan.top_k = expert_ids.dim(1);
  const int64_t slots = plan.n_tokens * plan.top_k;
  TANDEM_CHECK(slots <= std::numeric_limits<int>::max(), "make_permute_plan: ", slots,
               " slots, past what CUB's sort takes in one call (2^31 - 1)");
  const Device device = expert_ids.device();
  tandem::cuda::DeviceGuard guard(device.index);
  const cudaStream_t stream = tandem::cuda::compute_stream(device.index).handle();
  Tensor counts = Tensor::zeros({n_experts + 2}, DType::kI64, device);
  Tensor summary = Tensor::empty({n_experts + 2}, DType::kI64, device);  // offsets, then invalid
  plan.row_of_slot_on_device = Tensor::empty({slots}, DType::kI64, device);
  plan.token_of_row_on_device = Tensor::empty({slots}, DType::kI64, device);
  if (slots > 0) {
    Tensor slot_index = Tensor::empty({slots}, DType::kI64, device);
    Tensor sorted_ids = Tensor::empty({slots}, DType::kI32, device);
    Tensor sorted_slot = Tensor::empty({slots}, DType::kI64, device);
    count_experts_kernel<<<grid_for(slots), 256, 0, stream>>>(
        expert_ids.data<int32_t>(), slots, n_experts,
        reinterpret_cast<unsigned long long*>(counts.data<int64_t>()), slot_index.data<int64_t>());
    TANDEM_CHECK_CUDA(cudaGetLastError());
    // Radix sort is stable: within an expert the slots keep their order, as the CPU's counting
    // sort. Only the bits an id in range can have are sorted.
    int end_bit = 1;
    while ((int64_t{1} << end_bit) < n_experts) ++end_bit;
    size_t temp_bytes = 0;
    TANDEM_CHECK_CUDA(cub::DeviceRadixSort::SortPairs(
        nullptr, temp_bytes, expert_ids.data<int32_t>(), sorted_ids.data<int32_t>(),
        slot_index.data<int64_t>(), sorted_slot.data<int64_t>(), static_cast<int>(slots), 0,
        end_bit, stream));
    Tensor temp =
        Tensor::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::kU8, device);
    TANDEM_CHECK_CUDA(cub::DeviceRadixSort::SortPairs(
        temp.raw_data(), temp_bytes, expert_ids.data<int32_t>(), sorted_ids.data<int32_t>(),
        slot_index.data<int64_t>(), sorted_slot.data<int64_t>(), static_cast<int>(slots), 0,
        end_bit, stream));
    plan_indices_kernel<<<grid_for(slots), 256, 0, stream>>>(
        sorted_slot.data<int64_t>(), slots, plan.top_k, plan.token_of_row_on_device.data<int64_t>(),
        plan.row_of_slot_on_device.data<int64_t>());
    TANDEM_CHECK_CUDA(cudaGetLastError());
  }
  size_t scan_bytes = 0;
  const int64_t* counts_in = counts.data<int64_t>();
  int64_t* offsets_out = summary.data<int64_t>();
  TANDEM_CHECK_CUDA(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts_in, offsets_out,
                                                  static_cast<int>(n_experts + 1), stream));
  Tensor scan_temp =
      Tensor::empty({static_cast<int64_t>(std::max<size_t>(scan_bytes, 1))}, DType::kU8, device);
  TANDEM_CHECK_CUDA(cub::DeviceScan::ExclusiveSum(scan_temp.raw_data(), scan_bytes, counts_in,
                                                  offsets_out, static_cast<int>(n_experts + 1),
                                                  stream));
  TANDEM_CHECK_CUDA(cudaMemcpyAsync(offsets_out + n_experts + 1, counts_in + n_experts + 1,
                                    sizeof(int64_t), cudaMemcpyDeviceToDevice, stream));
  const Tensor host = summary.to(Device::cpu());  // the plan's one wait
  const int64_t* values = host.data<int64_t>();
  TANDEM_CHECK(values[n_experts + 1] == 0, "make_permute_plan: ", values[n_experts + 1], " of ",
               slots, " expert ids on ", device.to_string(), " are outside [0, ", n_experts, ")");
  plan.expert_offsets.assign(values, values + n_experts + 1);
  return plan;
}

void gather_rows(const Tensor& src, const Tensor& index, Tensor& dst) {
  const int64_t rows = index.numel();
  if (rows == 0) return;
  const size_t row_bytes = dst.nbytes() / rows;
  tandem::cuda::DeviceGuard guard(dst.device().index);
  const auto launch = [&](auto word) {
    using Word = decltype(word);
    gather_rows_kernel<Word><<<static_cast<unsigned>(rows), kThreads, 0, stream_of(dst)>>>(
        static_cast<const Word*>(src.raw_data()), index.data<int64_t>(),
        static_cast<int64_t>(row_bytes / sizeof(Word)), static_cast<Word*>(dst.raw_data()));
  };
  const uintptr_t bits = reinterpret_cast<uintptr_t>(src.raw_data()) |
                         reinterpret_cast<uintptr_t>(dst.raw_data()) | row_bytes;
  if (bits % sizeof(uint4) == 0)
    launch(uint4{});
  else if (bits % sizeof(uint32_t) == 0)
    launch(uint32_t{});
  else
    launch(uint8_t{});
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void permute_rows_backward(const Tensor& dxp, const PermutePlan& plan, Tensor& dx) {
  require_fp32({&dxp, &dx}, "permute_rows_backward");
  require_device_plan(plan, "permute_rows_backward");
  if (plan.n_tokens == 0) return;
  tandem::cuda::DeviceGuard guard(dx.device().index);
  permute_backward_kernel<<<static_cast<unsigned>(plan.n_tokens), kThreads, 0, stream_of(dx)>>>(
      dxp.data<float>(), plan.row_of_slot_on_device.data<int64_t>(), plan.top_k, dx.dim(1),
      dx.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void unpermute_weighted(const Tensor& yp, const Tensor& gate_weights, const PermutePlan& plan,
                        Tensor& y) {
  require_fp32({&yp, &gate_weights, &y}, "unpermute_weighted");
  require_device_plan(plan, "unpermute_weighted");
  if (plan.n_tokens == 0) return;
  tandem::cuda::DeviceGuard guard(y.device().index);
  unpermute_kernel<<<static_cast<unsigned>(plan.n_tokens), kThreads, 0, stream_of(y)>>>(
      yp.data<float>(), gate_weights.data<float>(), plan.row_of_slot_on_device.data<int64_t>(),
      plan.top_k, y.dim(1), y.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void unpermute_weighted_backward(const Tensor& dy, const Tensor& yp, const Tensor& gate_weights,
                                 const PermutePlan& plan, Tensor& dyp, Tensor& dgate_weights) {
  require_fp32({&dy, &yp, &gate_weights, &dyp, &dgate_weights}, "unpermute_weighted_backward");
  require_device_plan(plan, "unpermute_weighted_backward");
  if (plan.n_tokens == 0) return;
  tandem::cuda::DeviceGuard guard(dy.device().index);
  unpermute_backward_kernel<<<static_cast<unsigned>(plan.n_tokens), kThreads, 0, stream_of(dy)>>>(
      dy.data<float>(), yp.data<float>(), gate_weights.data<float>(),
      plan.row_of_slot_on_device.data<int64_t>(), plan.top_k, dy.dim(1), dyp.data<float>(),
      dgate_weights.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
