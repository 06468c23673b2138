// TANDEM_CHECK_CUDA: every CUDA runtime call is checked and a failure names the call, file and
// line.
#pragma once

#include <cuda_runtime.h>

#include "runtime/core/errors.h"

#define TANDEM_CHECK_CUDA(call)                                                    \
  do {                                                                             \
    cudaError_t tandem_cuda_status_ = (call);                                      \
    if (tandem_cuda_status_ != cudaSuccess) [[unlikely]]                           \
      TANDEM_FAIL(#call, " failed: ", cudaGetErrorName(tandem_cuda_status_), " (", \
                  cudaGetErrorString(tandem_cuda_status_), ")");                   \
  } while (0)
