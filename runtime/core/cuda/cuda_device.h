// CUDA implementations of Stream, Event and Allocator (see runtime/core/device.h), and each
// device's compute stream, on which the kernels of this process run in order.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "runtime/core/device.h"

namespace tandem::cuda {

// Devices that answer: 0 when there is no driver or no GPU (cudaErrorInsufficientDriver or
// cudaErrorNoDevice), never an exception, so CPU-only machines take the CPU path.
int device_count();
// "" when a device answers; else what the runtime said (cudaGetDeviceCount's error, or none).
std::string unavailable_reason();
// A hash of device `index`'s UUID: the same physical GPU whatever CUDA_VISIBLE_DEVICES numbers it.
int64_t device_identity(int index);
Allocator& device_allocator(int index);
std::unique_ptr<Stream> make_stream(int index);
std::unique_ptr<Event> make_event(int index);
// On one device: in the compute stream's order, without waiting. Between host and device (or two
// devices): after the compute stream's work (never the whole device's: communication streams may
// hold receives waiting on peers), in the compute stream, waited for, so the host may read or
// reuse its side at once.
void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes);
void zero_bytes(int index, void* dst, size_t bytes);  // on the compute stream

// Makes `index` the calling thread's current device for the guard's life.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

class CudaStream final : public Stream {
 public:
  explicit CudaStream(int index);
  ~CudaStream() override;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  Device device() const override { return Device::cuda(index_); }
  void synchronize() override;
  cudaStream_t handle() const { return stream_; }

 private:
  int index_;
  cudaStream_t stream_ = nullptr;
};

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(int index);
  ~CudaEvent() override;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record(Stream& stream) override;
  void synchronize() override;
  double elapsed_ms(const Event& later) const override;
  // Makes `stream` wait for this event's point in another stream (communication after compute).
  void block(const CudaStream& stream) const;
  cudaEvent_t handle() const { return event_; }

 private:
  int index_;
  cudaEvent_t event_ = nullptr;
};

// The device's compute stream: created on first use, one per device for the process (part of the
// runtime context), non-blocking with respect to the legacy default stream.
CudaStream& compute_stream(int index);

}  // namespace tandem::cuda
