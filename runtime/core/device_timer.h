// Times a span of one device's work by two events on its compute stream: on a GPU what its kernels
// took, not when the host finished enqueueing them (the host runs ahead of the device); on the CPU
// the work is the host's own, so the span is the host clock's.
#pragma once

#include <memory>

#include "runtime/core/device.h"

namespace tandem {

class DeviceTimer {
 public:
  // Records the start in the device's compute stream.
  explicit DeviceTimer(Device device);
  // Records the end, waits for the device to reach it, and returns the seconds from the start:
  // after it, all the work enqueued before it is done.
  double stop_seconds();

 private:
  Device device_;
  std::unique_ptr<Event> start_, stop_;
};

}  // namespace tandem
