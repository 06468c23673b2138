// DeviceTimer on the CPU (host clock) or on a CUDA device's compute stream.
#include "runtime/core/device_timer.h"

#ifdef TANDEM_HAVE_CUDA
#include "runtime/core/cuda/cuda_device.h"
#endif

namespace tandem {

namespace {
// In the stream a device's kernels run in: the compute stream on CUDA; on the CPU, the host.
void record_in_compute_stream(Event& event, [[maybe_unused]] Device device) {
#ifdef TANDEM_HAVE_CUDA
  if (device.type == DeviceType::kCUDA) return event.record(cuda::compute_stream(device.index));
#endif
  CpuStream host;
  event.record(host);
}
}  // namespace

DeviceTimer::DeviceTimer(Device device)
    : device_(device), start_(make_event(device)), stop_(make_event(device)) {
  record_in_compute_stream(*start_, device_);
}

double DeviceTimer::stop_seconds() {
  record_in_compute_stream(*stop_, device_);
  stop_->synchronize();
  return start_->elapsed_ms(*stop_) / 1e3;
}

}  // namespace tandem
