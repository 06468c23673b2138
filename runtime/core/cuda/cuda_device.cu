// CUDA streams, events and a device allocator behind tandem's device-neutral interfaces.
#include <map>
#include <mutex>

#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

namespace tandem::cuda {

namespace {

class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    TANDEM_CHECK_CUDA(cudaGetDevice(&previous_));
    if (previous_ != index) TANDEM_CHECK_CUDA(cudaSetDevice(index));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

class CudaStream final : public Stream {
 public:
  explicit CudaStream(int index) : index_(index) {
    DeviceGuard guard(index);
    TANDEM_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaStream() override { cudaStreamDestroy(stream_); }
  Device device() const override { return Device::cuda(index_); }
  void synchronize() override { TANDEM_CHECK_CUDA(cudaStreamSynchronize(stream_)); }
  cudaStream_t handle() const { return stream_; }

 private:
  int index_;
  cudaStream_t stream_ = nullptr;
};

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(int index) : index_(index) {
    DeviceGuard guard(index);
    TANDEM_CHECK_CUDA(cudaEventCreate(&event_));
  }
  ~CudaEvent() override { cudaEventDestroy(event_); }
  void record(Stream& stream) override {
    auto* cuda_stream = dynamic_cast<CudaStream*>(&stream);
    TANDEM_CHECK(cuda_stream != nullptr && stream.device().index == index_, "CUDA event of device ",
                 index_, " recorded on ", stream.device().to_string());
    TANDEM_CHECK_CUDA(cudaEventRecord(event_, cuda_stream->handle()));
  }
  void synchronize() override { TANDEM_CHECK_CUDA(cudaEventSynchronize(event_)); }
  double elapsed_ms(const Event& later) const override {
    const auto* other = dynamic_cast<const CudaEvent*>(&later);
    TANDEM_CHECK(other != nullptr, "elapsed_ms between events of different devices");
    float ms = 0;
    TANDEM_CHECK_CUDA(cudaEventElapsedTime(&ms, event_, other->event_));
    return ms;
  }

 private:
  int index_;
  cudaEvent_t event_ = nullptr;
};

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    DeviceGuard guard(index_);
    void* pointer = nullptr;
    TANDEM_CHECK_CUDA(cudaMalloc(&pointer, bytes));
    return pointer;
  }
  void deallocate(void* pointer, size_t) override {
    if (pointer != nullptr) cudaFree(pointer);
  }

 private:
  int index_;
};

}  // namespace

int device_count() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return count;
}

Allocator& device_allocator(int index) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<CudaAllocator>> allocators;
  TANDEM_CHECK(index >= 0 && index < device_count(), "CUDA device ", index, " requested but ",
               device_count(), " are visible");
  std::lock_guard lock(mutex);
  auto& slot = allocators[index];
  if (!slot) slot = std::make_unique<CudaAllocator>(index);
  return *slot;
}

std::unique_ptr<Stream> make_stream(int index) {
  return std::make_unique<CudaStream>(index);
}
std::unique_ptr<Event> make_event(int index) {
  return std::make_unique<CudaEvent>(index);
}

void copy_bytes(void* dst, const void* src, size_t bytes) {
  TANDEM_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

}  // namespace tandem::cuda
