// CPU devices, streams, events and the aligned host allocator; dispatch to CUDA when built with it.
#include "runtime/core/device.h"

#include <cstdlib>
#include <cstring>

#include "runtime/core/caching_allocator.h"
#include "runtime/core/errors.h"

#ifdef TANDEM_HAVE_CUDA
#include "runtime/core/cuda/cuda_device.h"
#endif

namespace tandem {

namespace {
constexpr size_t kHostAlignment = 64;  // vector loads never split a cache line
}  // namespace

std::string Device::to_string() const {
  return type == DeviceType::kCPU ? std::string("cpu") : detail::concat("cuda:", index);
}

void CpuEvent::record(Stream& stream) {
  TANDEM_CHECK(stream.device().type == DeviceType::kCPU, "CPU event recorded on ",
               stream.device().to_string());
  time_ = std::chrono::steady_clock::now();
}

double CpuEvent::elapsed_ms(const Event& later) const {
  const auto* other = dynamic_cast<const CpuEvent*>(&later);
  TANDEM_CHECK(other != nullptr, "elapsed_ms between events of different devices");
  return std::chrono::duration<double, std::milli>(other->time_ - time_).count();
}

Allocator& allocator_for(Device device) {
  // Host memory, 64-byte aligned, with freed blocks kept for reuse: handing them back to the OS
  // would cost a page fault per page on the next step (bench/RESULTS.md says what that cost).
  static CachingAllocator host(
      "cpu", {[](size_t bytes) { return std::aligned_alloc(kHostAlignment, bytes); },
              [](void* pointer) { std::free(pointer); }});
  if (device.type == DeviceType::kCPU) return host;
#ifdef TANDEM_HAVE_CUDA
  return cuda::device_allocator(device.index);
#else
  TANDEM_FAIL("device ", device.to_string(), " requested but tandem was built without CUDA");
#endif
}

std::unique_ptr<Stream> make_stream(Device device) {
  if (device.type == DeviceType::kCPU) return std::make_unique<CpuStream>();
#ifdef TANDEM_HAVE_CUDA
  return cuda::make_stream(device.index);
#else
  TANDEM_FAIL("device ", device.to_string(), " requested but tandem was built without CUDA");
#endif
}

std::unique_ptr<Event> make_event(Device device) {
  if (device.type == DeviceType::kCPU) return std::make_unique<CpuEvent>();
#ifdef TANDEM_HAVE_CUDA
  return cuda::make_event(device.index);
#else
  TANDEM_FAIL("device ", device.to_string(), " requested but tandem was built without CUDA");
#endif
}

int cuda_device_count() {
#ifdef TANDEM_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

int64_t cuda_device_identity([[maybe_unused]] int index) {
#ifdef TANDEM_HAVE_CUDA
  return cuda::device_identity(index);
#else
  return 0;
#endif
}

std::string device_unavailable_reason(DeviceType type) {
  if (type == DeviceType::kCPU) return "";
#ifdef TANDEM_HAVE_CUDA
  return cuda::unavailable_reason();
#else
  return "this tandem was built without CUDA (TANDEM_CUDA=OFF: configure found no nvcc or no "
         "nccl.h); rebuild where the CUDA toolkit and NCCL are installed";
#endif
}

void require_device(DeviceType type) {
  const std::string why = device_unavailable_reason(type);
  TANDEM_USER_CHECK(why.empty(), "config: train.device = \"", choice_name(type),
                    "\" cannot be used here: ", why, "; or set train.device = \"cpu\"");
}

Device training_device(DeviceType type) {
  if (type == DeviceType::kCPU) return Device::cpu();
  require_device(type);
  return Device::cuda(0);
}

}  // namespace tandem

namespace tandem {
void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.type == DeviceType::kCPU && src_device.type == DeviceType::kCPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef TANDEM_HAVE_CUDA
  cuda::copy_bytes(dst_device, dst, src_device, src, bytes);
#else
  TANDEM_FAIL("copy between ", src_device.to_string(), " and ", dst_device.to_string(),
              " needs a CUDA build");
#endif
}
}  // namespace tandem

namespace tandem {
void zero_bytes(Device device, void* dst, size_t bytes) {
  if (bytes == 0) return;
  if (device.type == DeviceType::kCPU) {
    std::memset(dst, 0, bytes);
    return;
  }
#ifdef TANDEM_HAVE_CUDA
  cuda::zero_bytes(device.index, dst, bytes);
#else
  TANDEM_FAIL("zeroing memory on ", device.to_string(), " needs a CUDA build");
#endif
}
}  // namespace tandem
