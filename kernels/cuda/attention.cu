// Causal attention as short kernels, one thread block per (sequence, head, position): the scores
// and their softmax (block max and sum over the row), then each output, value, query and key
// gradient as a sum over the causal range with the threads across the head's columns. Straight
// rather than fused (FlashAttention's tiling would not keep the probabilities the CPU reference
// keeps); every sum runs over j in order, in fp32.
#include "kernels/cuda/attention.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/tensor_checks.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 128;

struct Dims {
  int64_t seq_len, heads, head_dim, d, width;
  float scale;
};

// Block (b, h, i): the row of the ordinal this block handles.
struct RowOf {
  int64_t b, h, i;
  __device__ explicit RowOf(const Dims& s) {
    const int64_t block = blockIdx.x;
    i = block % s.seq_len;
    h = (block / s.seq_len) % s.heads;
    b = block / (s.seq_len * s.heads);
  }
  // qkv element (position p, part 0 = q | 1 = k | 2 = v, column c of this head).
  __device__ int64_t qkv_at(const Dims& s, int64_t p, int part, int64_t c) const {
    return (b * s.seq_len + p) * s.width + part * s.d + h * s.head_dim + c;
  }
  __device__ int64_t probs_row(const Dims& s, int64_t row) const {
    return ((b * s.heads + h) * s.seq_len + row) * s.seq_len;
  }
  __device__ int64_t out_at(const Dims& s, int64_t p, int64_t c) const {
    return (b * s.seq_len + p) * s.d + h * s.head_dim + c;
  }
};

// probs[i, j] = softmax_j≤i(q_i·k_j · scale), zeros above the diagonal.
__global__ void attention_probs_kernel(const float* qkv, Dims s, float* probs) {
  const RowOf at(s);
  float* row = probs + at.probs_row(s, at.i);
  float best = -INFINITY;
  for (int64_t j = threadIdx.x; j < s.seq_len; j += kThreads) {
    float score = 0;
    if (j <= at.i) {
      for (int64_t c = 0; c < s.head_dim; ++c)
        score += qkv[at.qkv_at(s, at.i, 0, c)] * qkv[at.qkv_at(s, j, 1, c)];
      score *= s.scale;
      best = fmaxf(best, score);
    }
    row[j] = score;
  }
  const float max_score = block_max<kThreads>(best);
  float sum = 0;
  for (int64_t j = threadIdx.x; j <= at.i; j += kThreads)
    sum += (row[j] = expf(row[j] - max_score));
  const float inv = 1.0f / block_sum<kThreads>(sum);
  for (int64_t j = threadIdx.x; j < s.seq_len; j += kThreads) row[j] = j <= at.i ? row[j] * inv : 0;
}

// out_i = Σ_j≤i probs[i, j] · v_j.
__global__ void attention_output_kernel(const float* qkv, const float* probs, Dims s, float* out) {
  const RowOf at(s);
  const float* p = probs + at.probs_row(s, at.i);
  for (int64_t c = threadIdx.x; c < s.head_dim; c += kThreads) {
    float sum = 0;
    for (int64_t j = 0; j <= at.i; ++j) sum += p[j] * qkv[at.qkv_at(s, j, 2, c)];
    out[at.out_at(s, at.i, c)] = sum;
  }
}

// dv_j = Σ_i≥j probs[i, j] · dout_i (this block's position is the key j).
__global__ void attention_dv_kernel(const float* dout, const float* probs, Dims s, float* dqkv) {
  const RowOf at(s);
  const int64_t j = at.i;
  for (int64_t c = threadIdx.x; c < s.head_dim; c += kThreads) {
    float sum = 0;
    for (int64_t i = j; i < s.seq_len; ++i)
      sum += probs[at.probs_row(s, i) + j] * dout[at.out_at(s, i, c)];
    dqkv[at.qkv_at(s, j, 2, c)] = sum;
  }
}

// dS[i, j] = P[i, j] · (dP[i, j] − Σ_j P·dP) · scale with dP[i, j] = dout_i · v_j.
__global__ void attention_dscores_kernel(const float* dout, const float* qkv, const float* probs,
                                         Dims s, float* dscores) {
  const RowOf at(s);
  const float* p = probs + at.probs_row(s, at.i);
  float* ds = dscores + at.probs_row(s, at.i);
  float dot = 0;
  for (int64_t j = threadIdx.x; j < s.seq_len; j += kThreads) {
    float dp = 0;
    if (j <= at.i)
      for (int64_t c = 0; c < s.head_dim; ++c)
        dp += dout[at.out_at(s, at.i, c)] * qkv[at.qkv_at(s, j, 2, c)];
    ds[j] = dp;
    dot += p[j] * dp;
  }
  const float row_dot = block_sum<kThreads>(dot);
  for (int64_t j = threadIdx.x; j < s.seq_len; j += kThreads)
    ds[j] = j <= at.i ? p[j] * (ds[j] - row_dot) * s.scale : 0;
}

// dq_i = Σ_j≤i dS[i, j] · k_j and dk_i = Σ_j≥i dS[j, i] · q_j.
__global__ void attention_dqk_kernel(const float* qkv, const float* dscores, Dims s, float* dqkv) {
  const RowOf at(s);
  const float* ds = dscores + at.probs_row(s, at.i);
  for (int64_t c = threadIdx.x; c < s.head_dim; c += kThreads) {
    float dq = 0, dk = 0;
    for (int64_t j = 0; j <= at.i; ++j) dq += ds[j] * qkv[at.qkv_at(s, j, 1, c)];
    for (int64_t j = at.i; j < s.seq_len; ++j)
      dk += dscores[at.probs_row(s, j) + at.i] * qkv[at.qkv_at(s, j, 0, c)];
    dqkv[at.qkv_at(s, at.i, 0, c)] = dq;
    dqkv[at.qkv_at(s, at.i, 1, c)] = dk;
  }
}

Dims dims_of(const Tensor& qkv, int64_t seq_len, int64_t n_heads) {
  const int64_t d = qkv.dim(1) / 3;
  return {seq_len, n_heads,    d / n_heads,
          d,       qkv.dim(1), 1.0f / sqrtf(static_cast<float>(d / n_heads))};
}

unsigned blocks_of(const Tensor& qkv, const Dims& s) {
  return static_cast<unsigned>(qkv.dim(0) * s.heads);  // (B·T) rows × heads
}

}  // namespace

void attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                       Tensor& probs) {
  require_fp32({&qkv, &out, &probs}, "attention_forward");
  if (qkv.dim(0) == 0) return;
  const Dims s = dims_of(qkv, seq_len, n_heads);
  const int index = qkv.device().index;
  tandem::cuda::DeviceGuard guard(index);
  const cudaStream_t stream = tandem::cuda::compute_stream(index).handle();
  attention_probs_kernel<<<blocks_of(qkv, s), kThreads, 0, stream>>>(qkv.data<float>(), s,
                                                                     probs.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  attention_output_kernel<<<blocks_of(qkv, s), kThreads, 0, stream>>>(
      qkv.data<float>(), probs.data<float>(), s, out.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, int64_t seq_len,
                        int64_t n_heads, Tensor& dqkv) {
  require_fp32({&dout, &qkv, &probs, &dqkv}, "attention_backward");
  if (qkv.dim(0) == 0) return;
  const Dims s = dims_of(qkv, seq_len, n_heads);
  const int index = qkv.device().index;
  Tensor dscores = Tensor::empty(probs.shape(), DType::kF32, qkv.device());
  tandem::cuda::DeviceGuard guard(index);
  const cudaStream_t stream = tandem::cuda::compute_stream(index).handle();
  const unsigned blocks = blocks_of(qkv, s);
  attention_dv_kernel<<<blocks, kThreads, 0, stream>>>(dout.data<float>(), probs.data<float>(), s,
                                                       dqkv.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  attention_dscores_kernel<<<blocks, kThreads, 0, stream>>>(
      dout.data<float>(), qkv.data<float>(), probs.data<float>(), s, dscores.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
  attention_dqk_kernel<<<blocks, kThreads, 0, stream>>>(qkv.data<float>(), dscores.data<float>(), s,
                                                        dqkv.data<float>());
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
