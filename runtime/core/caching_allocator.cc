// CachingAllocator: free lists by size class over a raw allocator, with bookkeeping that refuses
// foreign and double frees and an out-of-memory retry after releasing the cache.
#include "runtime/core/caching_allocator.h"

#include <algorithm>
#include <bit>

#include "runtime/core/errors.h"

namespace tandem {

CachingAllocator::CachingAllocator(std::string device_name, RawAllocator raw)
    : device_name_(std::move(device_name)), raw_(std::move(raw)) {}

CachingAllocator::~CachingAllocator() {
  // Blocks still handed out are left alone: an owner destroyed later (at process exit) may still
  // read them, and the process's end returns them anyway.
  release_cached_locked();
}

size_t CachingAllocator::size_class(size_t bytes) {
  constexpr size_t kGrain = 64;
  const size_t size = (bytes + kGrain - 1) / kGrain * kGrain;
  if (size <= 4096) return size;
  const size_t step = std::bit_floor(size) / 4;
  return (size + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = size_class(bytes);
  std::lock_guard lock(mutex_);
  void* pointer = nullptr;
  if (auto found = free_blocks_.find(size); found != free_blocks_.end() && !found->second.empty()) {
    pointer = found->second.back();
    found->second.pop_back();
    stats_.bytes_cached -= size;
    ++stats_.cache_hits;
  } else {
    pointer = raw_.allocate(size);
    if (pointer == nullptr && stats_.bytes_cached > 0) {  // the cache may hold what is missing
      release_cached_locked();
      pointer = raw_.allocate(size);
    }
    if (pointer == nullptr)
      TANDEM_USER_FAIL("out of memory on ", device_name_, ": allocating ", bytes,
                       " bytes (size class ", size, ") with ", stats_.bytes_in_use,
                       " bytes in use and none cached (peak ", stats_.peak_bytes_in_use,
                       "); use smaller batches or a shorter sequence, or more pipeline stages");
    ++stats_.raw_allocations;
  }
  live_.emplace(pointer, size);
  stats_.bytes_in_use += size;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return pointer;
}

void CachingAllocator::deallocate(void* pointer, size_t bytes) {
  if (pointer == nullptr) return;
  std::lock_guard lock(mutex_);
  const auto found = live_.find(pointer);
  TANDEM_CHECK(found != live_.end(), device_name_, " allocator: freeing ", pointer, " (", bytes,
               " bytes), which it did not hand out or which was freed already");
  const size_t size = found->second;
  TANDEM_CHECK(size_class(bytes) == size, device_name_, " allocator: ", pointer, " freed as ",
               bytes, " bytes but allocated in size class ", size);
  live_.erase(found);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
  free_blocks_[size].push_back(pointer);
}

void CachingAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  for (auto& [size, blocks] : free_blocks_)
    for (void* block : blocks) raw_.release(block);
  free_blocks_.clear();
  stats_.bytes_cached = 0;
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace tandem
