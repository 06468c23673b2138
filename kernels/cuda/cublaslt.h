// cuBLASLt for the GEMMs of the GPU path: one handle and workspace per device for the process
// (part of the runtime context), RAII for the descriptors of one call, and the one place a
// matmul is planned (heuristic) and enqueued on the device's compute stream.
#pragma once

#include <cublasLt.h>

#include <string>

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  Tensor workspace;
};
LtContext& lt_context(int device);

struct LtMatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  LtMatmulDesc(cublasComputeType_t compute, cudaDataType_t scale_type);
  ~LtMatmulDesc();
  LtMatmulDesc(const LtMatmulDesc&) = delete;
  LtMatmulDesc& operator=(const LtMatmulDesc&) = delete;
  void set(cublasLtMatmulDescAttributes_t attribute, const void* value, size_t size);
};

// A column-major rows × cols matrix of `type` with leading dimension ld.
struct LtLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  LtLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld);
  ~LtLayout();
  LtLayout(const LtLayout&) = delete;
  LtLayout& operator=(const LtLayout&) = delete;
};

// D = alpha · op(A) · op(B) + beta · D on device `device`'s compute stream, with the algorithm
// cuBLASLt's heuristic picks first; `what` names the GEMM when there is none.
void lt_matmul(int device, const LtMatmulDesc& desc, const void* a, const LtLayout& a_layout,
               const void* b, const LtLayout& b_layout, void* d, const LtLayout& d_layout,
               float alpha, float beta, const std::string& what);

}  // namespace tandem::kernels::cuda
