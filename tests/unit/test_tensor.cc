// Tensors, dtypes, devices and the bf16 conversion.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "runtime/core/device.h"
#include "runtime/core/tensor.h"

namespace tandem {
namespace {

TEST(Tensor, ShapesViewsAndCopies) {
  Tensor t = Tensor::zeros({4, 3}, DType::kF32);
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = static_cast<float>(i);
  Tensor rows = t.rows(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.data<float>()[0], 3.f);
  rows.data<float>()[0] = 42.f;  // a view shares storage
  EXPECT_EQ(t.data<float>()[3], 42.f);
  Tensor copy = t.clone();
  copy.data<float>()[3] = 0.f;  // a clone does not
  EXPECT_EQ(t.data<float>()[3], 42.f);
  EXPECT_EQ(t.reshape({12}).dim(0), 12);
  EXPECT_THROW(t.reshape({5}), Error);
  EXPECT_THROW(t.rows(2, 5), Error);
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_EQ(Tensor::zeros({0, 5}, DType::kF32).nbytes(), 0u);
}

// A shape whose product would overflow, or pass what a process can address, is refused before
// anything is allocated.
TEST(Tensor, ShapesPastAddressableMemoryAreRefused) {
  EXPECT_THROW(Tensor::empty({int64_t{1} << 32, int64_t{1} << 32}, DType::kF32), Error);
  EXPECT_THROW(Tensor::empty({int64_t{1} << 40, 1 << 10}, DType::kF32), Error);
  EXPECT_NO_THROW(Tensor::empty({0, int64_t{1} << 62}, DType::kF32));
}

TEST(DType, NamesSizesAndParsing) {
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2,
                  DType::kI32, DType::kI64, DType::kU8})
    EXPECT_EQ(parse_dtype(dtype_name(d)), d);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF8E4M3), 1u);
  EXPECT_THROW(parse_dtype("fp16"), Error);
}

TEST(DType, Bf16RoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(to_bf16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
  EXPECT_EQ(to_bf16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  EXPECT_EQ(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(to_float(to_bf16(-2.5f)), -2.5f);
}

TEST(Device, CpuStreamsEventsAndNoGpuHere) {
  auto stream = make_stream(Device::cpu());
  auto a = make_event(Device::cpu()), b = make_event(Device::cpu());
  // Events 20 ms apart: the elapsed time is at least that (a sleep never returns early) and far
  // less than a second; measured the other way round it is negative.
  a->record(*stream);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  b->record(*stream);
  const double elapsed_ms = a->elapsed_ms(*b);
  EXPECT_GE(elapsed_ms, 20.0);
  EXPECT_LT(elapsed_ms, 1000.0);
  EXPECT_DOUBLE_EQ(b->elapsed_ms(*a), -elapsed_ms);
  EXPECT_EQ(Device::cuda(1).to_string(), "cuda:1");
  if (cuda_device_count() == 0) {
    EXPECT_THROW(Tensor::empty({4}, DType::kF32, Device::cuda(0)), Error);
  }
}

}  // namespace
}  // namespace tandem
