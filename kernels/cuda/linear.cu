// Linear forward, dgrad and wgrad as cuBLASLt GEMMs with fp32 compute and output, on fp32 or bf16
// operands. A row-major [r, c] matrix is cuBLAS's
// column-major c × r one (ld c), so each row-major product C = A·B is computed as Cᵀ = Bᵀ·Aᵀ:
//   forward y[N,out] = x·wᵀ   → yᵀ (out×N) = op_T(w: in×out) · x (in×N)
//   dgrad  dx[N,in] = dy·w    → dxᵀ (in×N) = w (in×out) · dyᵀ (out×N)
//   wgrad  dw[out,in] += dyᵀ·x → dwᵀ (in×out) = x (in×N) · op_T(dy: out×N)
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::kernels::cuda {

namespace {

// The operands' cuBLAS type: fp32, or bf16 (the CPU entry has checked that the result is fp32).
cudaDataType_t operand_type(const Tensor& a, const Tensor& b, const Tensor& out,
                            const char* kernel) {
  require_fp32({&out}, kernel);
  TANDEM_CHECK(a.dtype() == b.dtype() && (a.dtype() == DType::kF32 || a.dtype() == DType::kBF16),
               kernel, " on CUDA takes fp32 or bf16 operands, got ", dtype_name(a.dtype()), " and ",
               dtype_name(b.dtype()));
  return a.dtype() == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// Column-major fp32 D (m×n, ld m) = op(A)·op(B) + beta·D for operands of `type` stored densely.
void gemm(int device, cudaDataType_t type, bool transpose_a, bool transpose_b, int64_t m, int64_t n,
          int64_t k, const void* a, const void* b, float* d, float beta, const char* what) {
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
  const LtLayout a_layout(type, transpose_a ? k : m, transpose_a ? m : k, transpose_a ? k : m);
  const LtLayout b_layout(type, transpose_b ? n : k, transpose_b ? k : n, transpose_b ? n : k);
  const LtLayout d_layout(CUDA_R_32F, m, n, m);
  lt_matmul(device, desc, a, a_layout, b, b_layout, d, d_layout, 1.0f, beta,
            detail::concat(what, type == CUDA_R_16BF ? " (bf16" : " (fp32", ", m ", m, " n ", n,
                           " k ", k, ")"));
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  const cudaDataType_t type = operand_type(x, w, y, "linear_forward");
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  gemm(y.device().index, type, true, false, out, n, in, w.raw_data(), x.raw_data(), y.data<float>(),
       accumulate ? 1.0f : 0.0f, "linear_forward");
}

void linear_dgrad(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  const cudaDataType_t type = operand_type(dy, w, dx, "linear_dgrad");
  const int64_t n = dy.dim(0), out = w.dim(0), in = w.dim(1);
  gemm(dx.device().index, type, false, false, in, n, out, w.raw_data(), dy.raw_data(),
       dx.data<float>(), accumulate ? 1.0f : 0.0f, "linear_dgrad");
}

void linear_wgrad(const Tensor& dy, const Tensor& x, Tensor& dw) {
  const cudaDataType_t type = operand_type(dy, x, dw, "linear_wgrad");
  const int64_t n = x.dim(0), in = x.dim(1), out = dy.dim(1);
  gemm(dw.device().index, type, false, true, in, out, n, x.raw_data(), dy.raw_data(),
       dw.data<float>(), 1.0f, "linear_wgrad");
}

}  // namespace tandem::kernels::cuda
