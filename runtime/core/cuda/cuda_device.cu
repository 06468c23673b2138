// CUDA streams, events, each device's compute stream and a device allocator behind tandem's
// device-neutral interfaces.
#include <map>
#include <mutex>

#include "runtime/core/caching_allocator.h"
#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::cuda {

DeviceGuard::DeviceGuard(int index) {
  TANDEM_CHECK_CUDA(cudaGetDevice(&previous_));
  if (previous_ != index) TANDEM_CHECK_CUDA(cudaSetDevice(index));
}
DeviceGuard::~DeviceGuard() {
  cudaSetDevice(previous_);
}

CudaStream::CudaStream(int index) : index_(index) {
  DeviceGuard guard(index);
  TANDEM_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}
CudaStream::~CudaStream() {
  cudaStreamDestroy(stream_);
}
void CudaStream::synchronize() {
  TANDEM_CHECK_CUDA(cudaStreamSynchronize(stream_));
}

CudaEvent::CudaEvent(int index) : index_(index) {
  DeviceGuard guard(index);
  TANDEM_CHECK_CUDA(cudaEventCreate(&event_));
}
CudaEvent::~CudaEvent() {
  cudaEventDestroy(event_);
}
void CudaEvent::record(Stream& stream) {
  auto* cuda_stream = dynamic_cast<CudaStream*>(&stream);
  TANDEM_CHECK(cuda_stream != nullptr && stream.device().index == index_, "CUDA event of device ",
               index_, " recorded on ", stream.device().to_string());
  TANDEM_CHECK_CUDA(cudaEventRecord(event_, cuda_stream->handle()));
}
void CudaEvent::synchronize() {
  TANDEM_CHECK_CUDA(cudaEventSynchronize(event_));
}
double CudaEvent::elapsed_ms(const Event& later) const {
  const auto* other = dynamic_cast<const CudaEvent*>(&later);
  TANDEM_CHECK(other != nullptr, "elapsed_ms between events of different devices");
  float ms = 0;
  TANDEM_CHECK_CUDA(cudaEventElapsedTime(&ms, event_, other->event_));
  return ms;
}
void CudaEvent::block(const CudaStream& stream) const {
  TANDEM_CHECK_CUDA(cudaStreamWaitEvent(stream.handle(), event_, 0));
}

int device_count() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return count;
}

std::string unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return detail::concat("no usable GPU: cudaGetDeviceCount failed: ", cudaGetErrorName(status),
                          " (", cudaGetErrorString(status), ")");
  }
  if (count == 0) return "no usable GPU: the CUDA runtime sees no device";
  return "";
}

namespace {

// A device's compute stream and its allocator, made together on first use. The allocator takes
// and returns memory in the stream's order (cudaMallocAsync, cudaFreeAsync), never waiting for
// the device: cudaFree would wait for every stream, among them receives posted ahead on the
// communication streams for peers that may first need this rank's next message. Declared after
// the stream, the allocator is destroyed before it.
struct DeviceResources {
  explicit DeviceResources(int index)
      : compute(index),
        allocator(detail::concat("cuda:", index),
                  RawAllocator{[index, stream = compute.handle()](size_t bytes) -> void* {
                                 DeviceGuard guard(index);
                                 void* pointer = nullptr;
                                 const cudaError_t status =
                                     cudaMallocAsync(&pointer, bytes, stream);
                                 if (status == cudaErrorMemoryAllocation) {
                                   cudaGetLastError();  // the caller releases and retries
                                   return nullptr;
                                 }
                                 TANDEM_CHECK_CUDA(status);
                                 return pointer;
                               },
                               [index, stream = compute.handle()](void* pointer) {
                                 DeviceGuard guard(index);
                                 // A cached block's last users are kernels queued before on the
                                 // compute stream (a communication stream's operation keeps its
                                 // buffers until its event), so it is freed after them there.
                                 cudaFreeAsync(pointer, stream);
                               }}) {}
  CudaStream compute;
  CachingAllocator allocator;
};

DeviceResources& device_resources(int index) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<DeviceResources>> devices;
  std::lock_guard lock(mutex);
  auto& slot = devices[index];
  if (!slot) {
    TANDEM_CHECK(index >= 0 && index < device_count(), "CUDA device ", index, " requested but ",
                 device_count(), " are visible");
    slot = std::make_unique<DeviceResources>(index);
  }
  return *slot;
}

}  // namespace

int64_t device_identity(int index) {
  cudaDeviceProp properties{};
  TANDEM_CHECK_CUDA(cudaGetDeviceProperties(&properties, index));
  uint64_t hash = 14695981039346656037ull;  // FNV-1a over the 16 bytes
  for (const char byte : properties.uuid.bytes) {
    hash ^= static_cast<unsigned char>(byte);
    hash *= 1099511628211ull;
  }
  return static_cast<int64_t>(hash);
}

Allocator& device_allocator(int index) {
  return device_resources(index).allocator;
}

CudaStream& compute_stream(int index) {
  return device_resources(index).compute;
}

std::unique_ptr<Stream> make_stream(int index) {
  return std::make_unique<CudaStream>(index);
}
std::unique_ptr<Event> make_event(int index) {
  return std::make_unique<CudaEvent>(index);
}

void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes) {
  const bool on_one_device = dst_device == src_device;
  const int index = dst_device.type == DeviceType::kCUDA ? dst_device.index : src_device.index;
  DeviceGuard guard(index);
  const cudaStream_t stream = compute_stream(index).handle();
  if (on_one_device) {
    TANDEM_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
    return;
  }
  // Only the compute stream's work comes first, never the whole device's: receives posted ahead
  // on the communication streams wait for peers that may first need this rank's next message, so
  // a device-wide synchronisation could deadlock the job. A buffer NCCL writes is read only after
  // its handle completes (the handle keeps it alive until then), and that completion is already
  // seen by this thread. The copy is waited for, since a pageable host buffer may be freed once
  // this returns.
  if (src_device.type == DeviceType::kCUDA && src_device.index != index) {
    DeviceGuard source(src_device.index);  // between two GPUs: the source's compute work too
    compute_stream(src_device.index).synchronize();
  }
  TANDEM_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  TANDEM_CHECK_CUDA(cudaStreamSynchronize(stream));
}

void zero_bytes(int index, void* dst, size_t bytes) {
  DeviceGuard guard(index);
  TANDEM_CHECK_CUDA(cudaMemsetAsync(dst, 0, bytes, compute_stream(index).handle()));
}

}  // namespace tandem::cuda
