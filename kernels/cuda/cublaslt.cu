// The process's cuBLASLt handles and workspaces, and the heuristic-then-matmul every GEMM runs.
#include <map>
#include <mutex>

#include "kernels/cuda/cublaslt.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::kernels::cuda {

LtContext& lt_context(int device) {
  static std::mutex mutex;
  static std::map<int, LtContext> contexts;
  std::lock_guard lock(mutex);
  LtContext& context = contexts[device];
  if (!context.handle) {
    tandem::cuda::DeviceGuard guard(device);
    TANDEM_CHECK_CUBLAS(cublasLtCreate(&context.handle));
    context.workspace =
        Tensor::empty({static_cast<int64_t>(kLtWorkspaceBytes)}, DType::kU8, Device::cuda(device));
  }
  return context;
}

LtMatmulDesc::LtMatmulDesc(cublasComputeType_t compute, cudaDataType_t scale_type) {
  TANDEM_CHECK_CUBLAS(cublasLtMatmulDescCreate(&desc, compute, scale_type));
}
LtMatmulDesc::~LtMatmulDesc() {
  cublasLtMatmulDescDestroy(desc);
}
void LtMatmulDesc::set(cublasLtMatmulDescAttributes_t attribute, const void* value, size_t size) {
  TANDEM_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, attribute, value, size));
}

LtLayout::LtLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  TANDEM_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                                 static_cast<uint64_t>(cols), ld));
}
LtLayout::~LtLayout() {
  cublasLtMatrixLayoutDestroy(layout);
}

namespace {
// The largest power of two (at most 256) that divides the address: cuBLASLt assumes 256 unless
// told, and row views (an expert's rows of a permuted block) are less aligned than that.
uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

struct LtPreference {
  cublasLtMatmulPreference_t preference = nullptr;
  LtPreference(const void* a, const void* b, const void* d) {
    TANDEM_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
    set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kLtWorkspaceBytes, sizeof kLtWorkspaceBytes);
    const uint32_t align_a = alignment_of(a), align_b = alignment_of(b), align_d = alignment_of(d);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof align_a);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof align_b);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof align_d);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof align_d);
  }
  void set(cublasLtMatmulPreferenceAttributes_t attribute, const void* value, size_t size) {
    TANDEM_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, attribute, value, size));
  }
  ~LtPreference() { cublasLtMatmulPreferenceDestroy(preference); }
  LtPreference(const LtPreference&) = delete;
  LtPreference& operator=(const LtPreference&) = delete;
};
}  // namespace

void lt_matmul(int device, const LtMatmulDesc& desc, const void* a, const LtLayout& a_layout,
               const void* b, const LtLayout& b_layout, void* d, const LtLayout& d_layout,
               float alpha, float beta, const std::string& what) {
  tandem::cuda::DeviceGuard guard(device);
  const cudaStream_t stream = tandem::cuda::compute_stream(device).handle();
  LtContext& lt = lt_context(device);
  LtPreference preference(a, b, d);
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  TANDEM_CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(
      lt.handle, desc.desc, a_layout.layout, b_layout.layout, d_layout.layout, d_layout.layout,
      preference.preference, 1, &heuristic, &found));
  TANDEM_CHECK(found > 0, what, " on cuda:", device, ": cuBLASLt has no algorithm for it");
  TANDEM_CHECK_CUBLAS(cublasLtMatmul(lt.handle, desc.desc, &alpha, a, a_layout.layout, b,
                                     b_layout.layout, &beta, d, d_layout.layout, d, d_layout.layout,
                                     &heuristic.algo, lt.workspace.raw_data(), kLtWorkspaceBytes,
                                     stream));
}

}  // namespace tandem::kernels::cuda
