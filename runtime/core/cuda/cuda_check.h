// TANDEM_CHECK_CUDA and TANDEM_CHECK_CUBLAS: every CUDA runtime and cuBLAS(Lt) call is checked,
// and a failure names the call, file and line.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime.h>

#include "runtime/core/errors.h"

#define TANDEM_CHECK_CUDA(call)                                                    \
  do {                                                                             \
    cudaError_t tandem_cuda_status_ = (call);                                      \
    if (tandem_cuda_status_ != cudaSuccess) [[unlikely]]                           \
      TANDEM_FAIL(#call, " failed: ", cudaGetErrorName(tandem_cuda_status_), " (", \
                  cudaGetErrorString(tandem_cuda_status_), ")");                   \
  } while (0)

namespace tandem::cuda {
// cuBLAS's own cublasGetStatusName lives in libcublas, which cuBLASLt's users need not load.
inline const char* cublas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE (a shape, layout or attribute it refuses)";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH (the GPU lacks the feature)";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED (this combination of types, scales and layout)";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "an unknown cublasStatus_t";
}
}  // namespace tandem::cuda

#define TANDEM_CHECK_CUBLAS(call)                                                                \
  do {                                                                                           \
    cublasStatus_t tandem_cublas_status_ = (call);                                               \
    if (tandem_cublas_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                             \
      TANDEM_FAIL(#call, " failed: ", ::tandem::cuda::cublas_status_name(tandem_cublas_status_), \
                  " (status ", static_cast<int>(tandem_cublas_status_), ")");                    \
  } while (0)
