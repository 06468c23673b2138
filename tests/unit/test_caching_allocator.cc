// CachingAllocator over a fake raw allocator: blocks are reused by size class, the bookkeeping
// counts what is in use and cached, a full raw allocator makes it release its cache and retry, and
// foreign or double frees are refused. What the GPU's allocator relies on, checked without a GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>

#include "runtime/core/caching_allocator.h"
#include "runtime/core/tensor.h"

namespace tandem {
namespace {

// Hands out real host memory up to a byte budget, and records what is outstanding.
struct FakeRaw {
  size_t budget = 1 << 20, outstanding = 0, calls = 0;
  std::set<void*> live;
  RawAllocator raw() {
    return {[this](size_t bytes) -> void* {
              ++calls;
              if (outstanding + bytes > budget) return nullptr;
              void* p = std::malloc(bytes);
              outstanding += bytes;
              live.insert(p);
              sizes[p] = bytes;
              return p;
            },
            [this](void* p) {
              outstanding -= sizes.at(p);
              live.erase(p);
              std::free(p);
            }};
  }
  std::map<void*, size_t> sizes;
};

TEST(CachingAllocator, SizeClassesBoundTheSlack) {
  EXPECT_EQ(CachingAllocator::size_class(1), 64u);
  EXPECT_EQ(CachingAllocator::size_class(4096), 4096u);
  EXPECT_EQ(CachingAllocator::size_class(4097), 5120u);
  for (size_t bytes = 1; bytes < (size_t{1} << 26); bytes = bytes * 3 + 1) {
    const size_t size = CachingAllocator::size_class(bytes);
    EXPECT_GE(size, bytes);
    EXPECT_EQ(size % 64, 0u);
    EXPECT_LE(static_cast<double>(size), bytes * 1.25 + 64) << bytes;
  }
}

TEST(CachingAllocator, ReusesFreedBlocksAndCountsThem) {
  FakeRaw fake;
  CachingAllocator allocator("fake:0", fake.raw());
  void* a = allocator.allocate(1000);
  allocator.deallocate(a, 1000);
  void* b = allocator.allocate(1000);  // the same size class: the same block, no raw call
  EXPECT_EQ(a, b);
  EXPECT_EQ(fake.calls, 1u);
  void* c = allocator.allocate(100000);
  auto stats = allocator.stats();
  EXPECT_EQ(stats.raw_allocations, 2u);
  EXPECT_EQ(stats.cache_hits, 1u);
  EXPECT_EQ(stats.bytes_in_use,
            CachingAllocator::size_class(1000) + CachingAllocator::size_class(100000));
  allocator.deallocate(b, 1000);
  allocator.deallocate(c, 100000);
  stats = allocator.stats();
  EXPECT_EQ(stats.bytes_in_use, 0u);
  EXPECT_EQ(stats.bytes_cached, fake.outstanding);
  EXPECT_EQ(stats.peak_bytes_in_use,
            CachingAllocator::size_class(1000) + CachingAllocator::size_class(100000));
  allocator.release_cached();
  EXPECT_EQ(fake.outstanding, 0u);
  EXPECT_EQ(allocator.stats().bytes_cached, 0u);
}

TEST(CachingAllocator, OutOfMemoryReleasesTheCacheThenSaysWhatWasAsked) {
  FakeRaw fake;
  fake.budget = 600 * 1024;
  CachingAllocator allocator("fake:0", fake.raw());
  void* cached = allocator.allocate(300 * 1024);
  allocator.deallocate(cached, 300 * 1024);
  // 400 KiB does not fit next to the cached 300 KiB: the cache is released and the call retried.
  void* big = allocator.allocate(400 * 1024);
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(allocator.stats().bytes_cached, 0u);
  try {
    allocator.allocate(300 * 1024);
    FAIL() << "an allocation past the budget succeeded";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("out of memory on fake:0: allocating 307200 bytes"), std::string::npos)
        << what;
    const std::string in_use = std::to_string(CachingAllocator::size_class(400 * 1024));
    EXPECT_NE(what.find(in_use + " bytes in use"), std::string::npos) << what;
  }
  allocator.deallocate(big, 400 * 1024);
}

TEST(CachingAllocator, RefusesForeignAndDoubleFrees) {
  FakeRaw fake;
  CachingAllocator allocator("fake:0", fake.raw());
  void* a = allocator.allocate(256);
  int foreign = 0;
  EXPECT_THROW(allocator.deallocate(&foreign, 4), Error);
  EXPECT_THROW(allocator.deallocate(a, 100000), Error);  // another size class than it had
  allocator.deallocate(a, 256);
  EXPECT_THROW(allocator.deallocate(a, 256), Error);
  EXPECT_EQ(allocator.stats().bytes_cached, CachingAllocator::size_class(256));
}

TEST(CachingAllocator, TheDestructorReturnsTheCacheAndLeavesWhatIsHandedOut) {
  FakeRaw fake;
  void* kept = nullptr;
  {
    CachingAllocator allocator("fake:0", fake.raw());
    kept = allocator.allocate(5000);
    void* freed = allocator.allocate(7000);
    allocator.deallocate(freed, 7000);
  }
  EXPECT_EQ(fake.live, std::set<void*>{kept});
  fake.raw().release(kept);
}

TEST(DeviceChecks, KernelsRefuseTensorsOnAnotherDeviceByName) {
  // Without a GPU no CUDA tensor can be made; what can be checked here is the refusal to make one.
  if (cuda_device_count() == 0) {
    EXPECT_THROW(Tensor::empty({4}, DType::kF32, Device::cuda(0)), Error);
    EXPECT_FALSE(device_unavailable_reason(DeviceType::kCUDA).empty());
  }
  EXPECT_TRUE(device_unavailable_reason(DeviceType::kCPU).empty());
}

}  // namespace
}  // namespace tandem
