// Linear forward, dgrad and wgrad as cuBLASLt fp32 GEMMs. A row-major [r, c] matrix is cuBLAS's
// column-major c × r one (ld c), so each row-major product C = A·B is computed as Cᵀ = Bᵀ·Aᵀ:
//   forward y[N,out] = x·wᵀ   → yᵀ (out×N) = op_T(w: in×out) · x (in×N)
//   dgrad  dx[N,in] = dy·w    → dxᵀ (in×N) = w (in×out) · dyᵀ (out×N)
//   wgrad  dw[out,in] += dyᵀ·x → dwᵀ (in×out) = x (in×N) · op_T(dy: out×N)
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::kernels::cuda {

namespace {

// Column-major D (m×n, ld m) = op(A)·op(B) + beta·D for fp32 operands stored densely.
void gemm_f32(int device, bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
              const float* a, const float* b, float* d, float beta, const char* what) {
  // What BLAS does with empty products (cuBLASLt refuses a leading dimension of 0): nothing to
  // write, or beta·D with nothing added.
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 0.0f)
      zero_bytes(Device::cuda(device), d, static_cast<size_t>(m * n) * sizeof(float));
    return;
  }
  LtMatmulDesc desc(CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t op_a = transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b);
  // The stored shapes (before op): A is m×k or k×m, B is k×n or n×k.
  const LtLayout a_layout(CUDA_R_32F, transpose_a ? k : m, transpose_a ? m : k,
                          transpose_a ? k : m);
  const LtLayout b_layout(CUDA_R_32F, transpose_b ? n : k, transpose_b ? k : n,
                          transpose_b ? n : k);
  const LtLayout d_layout(CUDA_R_32F, m, n, m);
  lt_matmul(device, desc, a, a_layout, b, b_layout, d, d_layout, 1.0f, beta,
            detail::concat(what, " (fp32, m ", m, " n ", n, " k ", k, ")"));
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  require_fp32({&x, &w, &y}, "linear_forward");
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  gemm_f32(y.device().index, true, false, out, n, in, w.data<float>(), x.data<float>(),
           y.data<float>(), accumulate ? 1.0f : 0.0f, "linear_forward");
}

void linear_dgrad(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  require_fp32({&dy, &w, &dx}, "linear_dgrad");
  const int64_t n = dy.dim(0), out = w.dim(0), in = w.dim(1);
  gemm_f32(dx.device().index, false, false, in, n, out, w.data<float>(), dy.data<float>(),
           dx.data<float>(), accumulate ? 1.0f : 0.0f, "linear_dgrad");
}

void linear_wgrad(const Tensor& dy, const Tensor& x, Tensor& dw) {
  require_fp32({&dy, &x, &dw}, "linear_wgrad");
  const int64_t n = x.dim(0), in = x.dim(1), out = dy.dim(1);
  gemm_f32(dw.device().index, false, true, in, out, n, x.data<float>(), dy.data<float>(),
           dw.data<float>(), 1.0f, "linear_wgrad");
}

}  // namespace tandem::kernels::cuda
