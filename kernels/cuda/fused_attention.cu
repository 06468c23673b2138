// Fused causal attention, one warp per row and 32 rows of the other side at a time (a lane per
// row, its dot product over the head's columns), the warp's own row in shared memory:
//   forward, per query row: the online softmax over key chunks (running max and sum, the output
//     rescaled as the max grows), so neither scores nor probabilities are ever stored;
//   backward: D_i = dO_i·O_i per query row (= Σ_j P_ij dP_ij), then dQ per query row and dK, dV
//     per key row, each recomputing P_ij = exp(s_ij − lse_i) for its causal range.
// Straightforward fp32 CUDA cores, no tensor cores: a first fused kernel, checked against the CPU
// reference (tests/gpu/kernel_check.cc), with memory O(T) per head.
#include <cmath>

#include "kernels/cuda/fused_attention.h"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kColumnsPerLane = kFusedAttentionMaxHeadDim / kWarp;

struct Dims {
  int64_t batch, seq_len, heads, head_dim, d, width;
  float scale;
};

// The warp's row: sequence b, head h, position i, for warp w of the grid.
struct WarpRow {
  int64_t b, h, i;
  bool valid;
  __device__ WarpRow(const Dims& s) {
    const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
    valid = w < s.batch * s.heads * s.seq_len;
    i = w % s.seq_len;
    h = (w / s.seq_len) % s.heads;
    b = w / (s.seq_len * s.heads);
  }
  // qkv's element (position p, part 0 = q | 1 = k | 2 = v, column c of this head).
  __device__ int64_t qkv_at(const Dims& s, int64_t p, int part, int64_t c) const {
    return (b * s.seq_len + p) * s.width + part * s.d + h * s.head_dim + c;
  }
  __device__ int64_t out_at(const Dims& s, int64_t p, int64_t c) const {
    return (b * s.seq_len + p) * s.d + h * s.head_dim + c;
  }
  __device__ int64_t lse_at(const Dims& s, int64_t p) const {
    return (b * s.heads + h) * s.seq_len + p;
  }
};

__device__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Σ_c row[c]·other[c] over the head's columns: the warp's row from shared memory, the lane's
// from global memory.
__device__ float dot(const float* row, const float* other, int64_t head_dim) {
  float sum = 0;
  for (int64_t c = 0; c < head_dim; ++c) sum += row[c] * other[c];
  return sum;
}

// acc (this lane's columns) += Σ_r weight_r · row (first + r) of qkv's part, for the chunk's
// rows r < min(32, remaining), lane r holding weight_r.
__device__ void add_weighted_rows(float (&acc)[kColumnsPerLane], float weight, const float* qkv,
                                  const WarpRow& at, const Dims& s, int64_t first,
                                  int64_t remaining, int part) {
  const int lane = threadIdx.x % kWarp;
  const int64_t rows = remaining < kWarp ? remaining : kWarp;
  for (int64_t r = 0; r < rows; ++r) {
    const float w = __shfl_sync(0xffffffffu, weight, static_cast<int>(r));
    for (int t = 0; t < kColumnsPerLane; ++t) {
      const int64_t c = lane + t * kWarp;
      if (c < s.head_dim) acc[t] += w * qkv[at.qkv_at(s, first + r, part, c)];
    }
  }
}

// out_i = Σ_j≤i softmax_j(s_ij) v_j with s_ij = q_i·k_j·scale; lse_i = log Σ_j≤i exp(s_ij).
__global__ void fused_forward_kernel(const float* qkv, Dims s, float* out, float* lse) {
  __shared__ float q_rows[kWarpsPerBlock][kFusedAttentionMaxHeadDim];
  const WarpRow at(s);
  if (!at.valid) return;  // the whole warp: rows are per warp
  const int lane = threadIdx.x % kWarp;
  float* q = q_rows[threadIdx.x / kWarp];
  for (int64_t c = lane; c < s.head_dim; c += kWarp) q[c] = qkv[at.qkv_at(s, at.i, 0, c)];
  __syncwarp();
  float running_max = -INFINITY, running_sum = 0, acc[kColumnsPerLane] = {};
  for (int64_t j0 = 0; j0 <= at.i; j0 += kWarp) {
    const int64_t j = j0 + lane;
    const float score =
        j <= at.i ? dot(q, qkv + at.qkv_at(s, j, 1, 0), s.head_dim) * s.scale : -INFINITY;
    const float new_max = fmaxf(running_max, warp_max(score));
    const float p = j <= at.i ? expf(score - new_max) : 0.0f;
    const float rescale = expf(running_max - new_max);  // 0 on the first chunk
    running_sum = running_sum * rescale + warp_sum(p);
    for (int t = 0; t < kColumnsPerLane; ++t) acc[t] *= rescale;
    add_weighted_rows(acc, p, qkv, at, s, j0, at.i - j0 + 1, 2);
    running_max = new_max;
  }
  for (int t = 0; t < kColumnsPerLane; ++t) {
    const int64_t c = lane + t * kWarp;
    if (c < s.head_dim) out[at.out_at(s, at.i, c)] = acc[t] / running_sum;
  }
  if (lane == 0) lse[at.lse_at(s, at.i)] = running_max + logf(running_sum);
}

// row_dot_i = dO_i·O_i for every (b, h, i).
__global__ void output_dot_kernel(const float* dout, const float* out, Dims s, float* row_dot) {
  const WarpRow at(s);
  if (!at.valid) return;
  const int lane = threadIdx.x % kWarp;
  float sum = 0;
  for (int64_t c = lane; c < s.head_dim; c += kWarp)
    sum += dout[at.out_at(s, at.i, c)] * out[at.out_at(s, at.i, c)];
  sum = warp_sum(sum);
  if (lane == 0) row_dot[at.lse_at(s, at.i)] = sum;
}

// dq_i = scale · Σ_j≤i P_ij (dP_ij − D_i) k_j with dP_ij = dO_i·v_j.
__global__ void fused_dq_kernel(const float* qkv, const float* dout, const float* lse,
                                const float* row_dot, Dims s, float* dqkv) {
  __shared__ float rows[kWarpsPerBlock][2][kFusedAttentionMaxHeadDim];
  const WarpRow at(s);
  if (!at.valid) return;
  const int lane = threadIdx.x % kWarp;
  float* q = rows[threadIdx.x / kWarp][0];
  float* g = rows[threadIdx.x / kWarp][1];
  for (int64_t c = lane; c < s.head_dim; c += kWarp) {
    q[c] = qkv[at.qkv_at(s, at.i, 0, c)];
    g[c] = dout[at.out_at(s, at.i, c)];
  }
  __syncwarp();
  const float lse_i = lse[at.lse_at(s, at.i)], d_i = row_dot[at.lse_at(s, at.i)];
  float acc[kColumnsPerLane] = {};
  for (int64_t j0 = 0; j0 <= at.i; j0 += kWarp) {
    const int64_t j = j0 + lane;
    float ds = 0;
    if (j <= at.i) {
      const float p = expf(dot(q, qkv + at.qkv_at(s, j, 1, 0), s.head_dim) * s.scale - lse_i);
      ds = p * (dot(g, qkv + at.qkv_at(s, j, 2, 0), s.head_dim) - d_i) * s.scale;
    }
    add_weighted_rows(acc, ds, qkv, at, s, j0, at.i - j0 + 1, 1);
  }
  for (int t = 0; t < kColumnsPerLane; ++t) {
    const int64_t c = lane + t * kWarp;
    if (c < s.head_dim) dqkv[at.qkv_at(s, at.i, 0, c)] = acc[t];
  }
}

// For key row j (the warp's row, "i" in WarpRow): dv_j = Σ_i≥j P_ij dO_i and
// dk_j = scale · Σ_i≥j P_ij (dP_ij − D_i) q_i.
__global__ void fused_dkv_kernel(const float* qkv, const float* dout, const float* lse,
                                 const float* row_dot, Dims s, float* dqkv) {
  __shared__ float rows[kWarpsPerBlock][2][kFusedAttentionMaxHeadDim];
  const WarpRow at(s);
  if (!at.valid) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t j = at.i;
  float* k = rows[threadIdx.x / kWarp][0];
  float* v = rows[threadIdx.x / kWarp][1];
  for (int64_t c = lane; c < s.head_dim; c += kWarp) {
    k[c] = qkv[at.qkv_at(s, j, 1, c)];
    v[c] = qkv[at.qkv_at(s, j, 2, c)];
  }
  __syncwarp();
  float dk[kColumnsPerLane] = {}, dv[kColumnsPerLane] = {};
  for (int64_t i0 = j; i0 < s.seq_len; i0 += kWarp) {
    const int64_t i = i0 + lane;
    float p = 0, ds = 0;
    if (i < s.seq_len) {
      p = expf(dot(k, qkv + at.qkv_at(s, i, 0, 0), s.head_dim) * s.scale - lse[at.lse_at(s, i)]);
      ds = p * (dot(v, dout + at.out_at(s, i, 0), s.head_dim) - row_dot[at.lse_at(s, i)]) * s.scale;
    }
    const int64_t last = s.seq_len - i0 < kWarp ? s.seq_len - i0 : kWarp;
    for (int64_t ii = 0; ii < last; ++ii) {
      const float pi = __shfl_sync(0xffffffffu, p, static_cast<int>(ii));
      const float dsi = __shfl_sync(0xffffffffu, ds, static_cast<int>(ii));
      for (int t = 0; t < kColumnsPerLane; ++t) {
        const int64_t c = lane + t * kWarp;
        if (c < s.head_dim) {
          dv[t] += pi * dout[at.out_at(s, i0 + ii, c)];
          dk[t] += dsi * qkv[at.qkv_at(s, i0 + ii, 0, c)];
        }
      }
    }
  }
  for (int t = 0; t < kColumnsPerLane; ++t) {
    const int64_t c = lane + t * kWarp;
    if (c < s.head_dim) {
      dqkv[at.qkv_at(s, j, 1, c)] = dk[t];
      dqkv[at.qkv_at(s, j, 2, c)] = dv[t];
    }
  }
}

Dims dims_of(const Tensor& qkv, int64_t seq_len, int64_t n_heads) {
  const int64_t d = qkv.dim(1) / 3;
  Dims s{qkv.dim(0) / seq_len, seq_len, n_heads, d / n_heads, d, qkv.dim(1), 0.0f};
  s.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  TANDEM_CHECK(s.head_dim <= kFusedAttentionMaxHeadDim,
               "fused attention on CUDA takes heads of at ", "most ", kFusedAttentionMaxHeadDim,
               " columns, got ", s.head_dim);
  return s;
}

unsigned warp_blocks(const Dims& s) {
  const int64_t rows = s.batch * s.heads * s.seq_len;
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

void fused_attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                             Tensor& lse) {
  require_fp32({&qkv, &out, &lse}, "fused_attention_forward");
  const Dims s = dims_of(qkv, seq_len, n_heads);
  if (s.batch * s.seq_len == 0) return;
  tandem::cuda::DeviceGuard guard(qkv.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(qkv.device().index).handle();
  fused_forward_kernel<<<warp_blocks(s), kWarpsPerBlock * kWarp, 0, stream>>>(
      qkv.data<float>(), s, out.data<float>(), lse.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                              const Tensor& lse, int64_t seq_len, int64_t n_heads, Tensor& dqkv) {
  require_fp32({&dout, &qkv, &out, &lse, &dqkv}, "fused_attention_backward");
  const Dims s = dims_of(qkv, seq_len, n_heads);
  if (s.batch * s.seq_len == 0) return;
  Tensor row_dot = Tensor::empty(lse.shape(), DType::kF32, lse.device());
  tandem::cuda::DeviceGuard guard(qkv.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(qkv.device().index).handle();
  const unsigned blocks = warp_blocks(s), threads = kWarpsPerBlock * kWarp;
  output_dot_kernel<<<blocks, threads, 0, stream>>>(dout.data<float>(), out.data<float>(), s,
                                                    row_dot.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  fused_dq_kernel<<<blocks, threads, 0, stream>>>(qkv.data<float>(), dout.data<float>(),
                                                  lse.data<float>(), row_dot.data<float>(), s,
                                                  dqkv.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  fused_dkv_kernel<<<blocks, threads, 0, stream>>>(qkv.data<float>(), dout.data<float>(),
                                                   lse.data<float>(), row_dot.data<float>(), s,
                                                   dqkv.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
