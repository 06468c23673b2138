// AdamW on the GPU: one thread per element over the flat span, float4 loads where the span and
// its pointers allow (a parameter's tensors are allocated alike), the bias corrections computed
// once on the host in double as the CPU reference does.
#include <cmath>

#include "kernels/cuda/optimizer.h"
#include "kernels/cuda/tensor_checks.h"
#include "kernels/cuda/vector_access.cuh"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

namespace {

constexpr int kThreads = 256;

struct AdamWScalars {
  float b1, b2, eps, lr, decay, c1, c2;
};

__device__ void adamw_one(float& p, float g, float& m, float& v, const AdamWScalars& s) {
  m = s.b1 * m + (1.0f - s.b1) * g;
  v = s.b2 * v + (1.0f - s.b2) * g * g;
  p = p * s.decay - s.lr * (m * s.c1) / (sqrtf(v * s.c2) + s.eps);
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                             AdamWScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    adamw_one(p[i], g[i], m[i], v[i], s);
}

__global__ void adamw_kernel4(float4* p, const float4* g, float4* m, float4* v, int64_t n4,
                              AdamWScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float4 pp = p[i], mm = m[i], vv = v[i];
    const float4 gg = g[i];
    adamw_one(pp.x, gg.x, mm.x, vv.x, s);
    adamw_one(pp.y, gg.y, mm.y, vv.y, s);
    adamw_one(pp.z, gg.z, mm.z, vv.z, s);
    adamw_one(pp.w, gg.w, mm.w, vv.w, s);
    p[i] = pp, m[i] = mm, v[i] = vv;
  }
}

}  // namespace

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h) {
  require_fp32({&param, &grad, &m, &v}, "adamw_update");
  const int64_t n = param.numel();
  if (n == 0) return;
  const AdamWScalars s{static_cast<float>(h.beta1),
                       static_cast<float>(h.beta2),
                       static_cast<float>(h.eps),
                       static_cast<float>(h.lr),
                       static_cast<float>(1 - h.lr * h.weight_decay),
                       static_cast<float>(1 / (1 - std::pow(h.beta1, h.step))),
                       static_cast<float>(1 / (1 - std::pow(h.beta2, h.step)))};
  tandem::cuda::DeviceGuard guard(param.device().index);
  const cudaStream_t stream = tandem::cuda::compute_stream(param.device().index).handle();
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  float* ms = m.data<float>();
  float* vs = v.data<float>();
  const int64_t blocks_needed = (n + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(blocks_needed < 4096 ? blocks_needed : 4096);
  if (n % 4 == 0 && aligned_16(p, g, ms, vs)) {
    adamw_kernel4<<<blocks, kThreads, 0, stream>>>(
        reinterpret_cast<float4*>(p), reinterpret_cast<const float4*>(g),
        reinterpret_cast<float4*>(ms), reinterpret_cast<float4*>(vs), n / 4, s);
  } else {
    adamw_kernel<<<blocks, kThreads, 0, stream>>>(p, g, ms, vs, n, s);
  }
  TANDEM_CHECK_CUDA(cudaGetLastError());
}

}  // namespace tandem::kernels::cuda
