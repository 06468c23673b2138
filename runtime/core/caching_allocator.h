// A caching allocator over a raw one (aligned_alloc on the host, cudaMallocAsync on a GPU's
// compute stream): freed blocks are kept by size class and handed out again, because a training
// step allocates the same sizes every time and the raw calls are slow (page faults on the host, a
// driver call on a GPU). On a GPU every block belongs to the device's compute stream, where the
// kernels run in order, so a block freed there may be reused at once (stream-ordered reuse); memory
// a communication stream still reads must be kept alive by its operation until its event. When the
// raw allocator is out of memory, the cache is released and the call tried once more; then the
// error says how much was asked, in use and cached. Freeing a pointer it did not hand out, or
// twice, is an error, not a corruption.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/core/device.h"

namespace tandem {

struct RawAllocator {
  std::function<void*(size_t bytes)> allocate;  // nullptr when out of memory
  std::function<void(void* pointer)> release;
};

class CachingAllocator final : public Allocator {
 public:
  CachingAllocator(std::string device_name, RawAllocator raw);
  ~CachingAllocator() override;  // releases the cached blocks (not those still handed out)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes) override;
  void deallocate(void* pointer, size_t bytes) override;
  // Gives every cached block back to the raw allocator.
  void release_cached();

  struct Stats {
    size_t bytes_in_use = 0;  // of size classes handed out
    size_t bytes_cached = 0;
    size_t peak_bytes_in_use = 0;
    size_t raw_allocations = 0;
    size_t cache_hits = 0;
  };
  Stats stats() const;

  // Multiples of 64 bytes up to 4 KiB, then quarter steps between powers of two (≤ 25% slack).
  static size_t size_class(size_t bytes);

 private:
  void release_cached_locked();
  const std::string device_name_;
  const RawAllocator raw_;
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by size class
  std::unordered_map<void*, size_t> live_;                      // handed out: its size class
  Stats stats_;
};

}  // namespace tandem
