// Devices, streams, events and allocators. The CPU implementation runs work in order on the calling
// thread's pool; the CUDA implementation (runtime/core/cuda/) wraps cudaStream_t and cudaEvent_t
// behind the same interface, so the model and executor never name a backend.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "runtime/core/choices.h"

namespace tandem {

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;
  bool operator==(const Device&) const = default;
  std::string to_string() const;
  static Device cpu() { return {}; }
  static Device cuda(int index) { return {DeviceType::kCUDA, index}; }
};

// Work submitted to a stream runs in submission order. CPU kernels run synchronously, so a CPU
// stream is always idle when control returns; synchronize() exists for code that is device-neutral.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual Device device() const = 0;
  virtual void synchronize() = 0;
};

// A point in a stream's work, for ordering and timing.
class Event {
 public:
  virtual ~Event() = default;
  virtual void record(Stream& stream) = 0;
  virtual void synchronize() = 0;
  // Milliseconds between two recorded events on the same device.
  virtual double elapsed_ms(const Event& later) const = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* pointer, size_t bytes) = 0;
};

class CpuStream final : public Stream {
 public:
  Device device() const override { return Device::cpu(); }
  void synchronize() override {}
};

class CpuEvent final : public Event {
 public:
  void record(Stream& stream) override;
  void synchronize() override {}
  double elapsed_ms(const Event& later) const override;

 private:
  std::chrono::steady_clock::time_point time_;
};

// The allocator for a device; CPU memory is 64-byte aligned so vector loads never split lines.
Allocator& allocator_for(Device device);
std::unique_ptr<Stream> make_stream(Device device);
std::unique_ptr<Event> make_event(Device device);

// Number of usable CUDA devices: 0 when the build has no CUDA or no driver/GPU answers.
int cuda_device_count();
// Which physical GPU CUDA device `index` is (a hash of its UUID), comparable between processes
// that number their devices differently; 0 without CUDA.
int64_t cuda_device_identity(int index);
// Why `type` cannot be used here ("" when it can): for CUDA, a build without it, or no driver
// or GPU (with the runtime's own words).
std::string device_unavailable_reason(DeviceType type);
// train.device = `type` where it cannot be had is a configuration error (exit 2) saying what is
// missing, never a silent fallback to the CPU.
void require_device(DeviceType type);
// The device a process trains on for train.device = `type`: the CPU, or the first CUDA device it
// sees (one process per GPU: a launcher gives each rank its own through CUDA_VISIBLE_DEVICES).
Device training_device(DeviceType type);

}  // namespace tandem

namespace tandem {
// Copies bytes between any two devices (host<->host is memcpy); blocks until the copy is done.
void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes);
// Sets bytes to zero: memset on the CPU, in the device's compute stream's order on CUDA.
void zero_bytes(Device device, void* dst, size_t bytes);
}  // namespace tandem
