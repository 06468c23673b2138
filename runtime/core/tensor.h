// Tensor: a contiguous row-major array of one dtype on one device, sharing reference-counted
// storage. Copying a Tensor copies the handle (like torch.Tensor); clone() copies the data.
// rows() and reshape() return views on the same storage.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/errors.h"

namespace tandem {

using Shape = std::vector<int64_t>;
std::string shape_string(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(Shape shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::cpu());
  // CPU memory from a given allocator (memory other processes map, for instance); the tensor's
  // storage keeps the allocator alive.
  static Tensor empty(Shape shape, DType dtype, std::shared_ptr<Allocator> allocator);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const;
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw_data() const;
  // Typed access; the element type must match the dtype exactly.
  template <class T>
  T* data() const {
    TANDEM_CHECK(DTypeOf<T>::value == dtype_, "tensor of dtype ", dtype_name(dtype_),
                 " accessed as ", dtype_name(DTypeOf<T>::value));
    return static_cast<T*>(raw_data());
  }

  // Rows [begin, end) of the leading dimension, sharing storage.
  Tensor rows(int64_t begin, int64_t end) const;
  // Same elements, new shape (numel must match); shares storage.
  Tensor reshape(Shape shape) const;
  Tensor clone() const;
  Tensor to(Device device) const;
  void zero_();
  // Copies src's elements into this tensor; shapes and dtypes must match.
  void copy_from(const Tensor& src);

 private:
  struct Storage;
  static Tensor empty_on(Shape shape, DType dtype, Device device, std::shared_ptr<Allocator> owner);
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_;
};

// Checks used at kernel entry points, with messages naming the argument.
void check_shape(const Tensor& tensor, const Shape& expected, const char* name);
void check_dtype(const Tensor& tensor, DType expected, const char* name);

}  // namespace tandem
