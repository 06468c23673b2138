// Tensor storage, views and copies.
#include "runtime/core/tensor.h"

#include <cstring>
#include <numeric>
#include <optional>

#include "runtime/core/checked_size.h"

namespace tandem {

// `owner` is the allocator of memory that is not the device's own (memory shared with other
// processes); it stays alive as long as the storage does.
struct Tensor::Storage {
  Storage(size_t bytes, Device device, std::shared_ptr<Allocator> owner)
      : device(device),
        bytes(bytes),
        owner(std::move(owner)),
        pointer(allocator().allocate(bytes)) {}
  ~Storage() { allocator().deallocate(pointer, bytes); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  Allocator& allocator() const { return owner ? *owner : allocator_for(device); }
  Device device;
  size_t bytes;
  std::shared_ptr<Allocator> owner;
  void* pointer;
};

std::string shape_string(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  return empty_on(std::move(shape), dtype, device, nullptr);
}

Tensor Tensor::empty(Shape shape, DType dtype, std::shared_ptr<Allocator> allocator) {
  TANDEM_CHECK(allocator != nullptr, "Tensor::empty with a null allocator");
  return empty_on(std::move(shape), dtype, Device::cpu(), std::move(allocator));
}

Tensor Tensor::empty_on(Shape shape, DType dtype, Device device, std::shared_ptr<Allocator> owner) {
  Tensor tensor;
  std::optional<int64_t> elements = 1;
  for (int64_t extent : shape) {
    TANDEM_CHECK(extent >= 0, "negative extent in shape ", shape_string(shape));
    if (elements) elements = checked_mul(*elements, extent);
  }
  // validate_config bounds the tensors a configuration asks for; this catches any it missed.
  TANDEM_CHECK(elements && *elements <= kMaxElements, "shape ", shape_string(shape),
               " has more than 2^44 elements, more than one process can address");
  tensor.shape_ = std::move(shape);
  tensor.dtype_ = dtype;
  tensor.device_ = device;
  tensor.storage_ = std::make_shared<Storage>(tensor.nbytes(), device, std::move(owner));
  return tensor;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor tensor = empty(std::move(shape), dtype, device);
  tensor.zero_();
  return tensor;
}

int64_t Tensor::dim(int axis) const {
  if (axis < 0) axis += ndim();
  TANDEM_CHECK(axis >= 0 && axis < ndim(), "axis ", axis, " out of range for shape ",
               shape_string(shape_));
  return shape_[axis];
}

int64_t Tensor::numel() const {
  return std::accumulate(shape_.begin(), shape_.end(), int64_t{1}, std::multiplies<>());
}

void* Tensor::raw_data() const {
  if (!storage_ || storage_->pointer == nullptr) return nullptr;
  return static_cast<char*>(storage_->pointer) + offset_bytes_;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  TANDEM_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ", ",
               end, ") of shape ", shape_string(shape_));
  Tensor view = *this;
  view.shape_[0] = end - begin;
  view.offset_bytes_ += static_cast<size_t>(begin) * (shape_[0] ? nbytes() / shape_[0] : 0);
  return view;
}

Tensor Tensor::reshape(Shape shape) const {
  Tensor view = *this;
  view.shape_ = std::move(shape);
  TANDEM_CHECK(view.numel() == numel(), "cannot reshape ", shape_string(shape_), " to ",
               shape_string(view.shape_));
  return view;
}

Tensor Tensor::clone() const {
  return to(device_);
}

Tensor Tensor::to(Device device) const {
  Tensor out = empty(shape_, dtype_, device);
  copy_bytes(device, out.raw_data(), device_, raw_data(), nbytes());
  return out;
}

void Tensor::zero_() {
  if (nbytes()) zero_bytes(device_, raw_data(), nbytes());
}

void Tensor::copy_from(const Tensor& src) {
  TANDEM_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy_from ", shape_string(src.shape_),
               " ", dtype_name(src.dtype_), " into ", shape_string(shape_), " ",
               dtype_name(dtype_));
  copy_bytes(device_, raw_data(), src.device_, src.raw_data(), nbytes());
}

void check_shape(const Tensor& tensor, const Shape& expected, const char* name) {
  TANDEM_CHECK(tensor.shape() == expected, name, " has shape ", shape_string(tensor.shape()),
               ", expected ", shape_string(expected));
}

void check_dtype(const Tensor& tensor, DType expected, const char* name) {
  TANDEM_CHECK(tensor.dtype() == expected, name, " has dtype ", dtype_name(tensor.dtype()),
               ", expected ", dtype_name(expected));
}

}  // namespace tandem
