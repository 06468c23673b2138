// CUDA implementations of Stream, Event and Allocator (see runtime/core/device.h).
#pragma once

#include <memory>

#include "runtime/core/device.h"

namespace tandem::cuda {

// Devices that answer: 0 when there is no driver or no GPU (cudaErrorInsufficientDriver or
// cudaErrorNoDevice), never an exception, so CPU-only machines take the CPU path.
int device_count();
Allocator& device_allocator(int index);
std::unique_ptr<Stream> make_stream(int index);
std::unique_ptr<Event> make_event(int index);
void copy_bytes(void* dst, const void* src, size_t bytes);

}  // namespace tandem::cuda
