// The safetensors file format (Hugging Face's), written and read strictly: an 8-byte
// little-endian header length N, N bytes of JSON mapping each tensor's name to its dtype, shape
// and data_offsets (a byte range relative to the data that follows the header), plus an optional
// "__metadata__" object of string values; the header is padded with spaces to a multiple of 8 so
// that every tensor is aligned to its element size, and the tensors' bytes tile the data without
// gaps or overlaps (what the reference reader demands). Checkpoint shards and exported models
// are such files, so Python's `safetensors` and PyTorch read them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/tensor.h"

namespace tandem::safetensors {

// The format's name of a dtype: F32, F64, BF16, F8_E4M3, F8_E5M2, I32, I64, U8.
std::string_view name_of(DType dtype);
// The dtype of a name, or an Error naming `what` (the file) and the names this reader knows.
DType dtype_of(std::string_view name, std::string_view what);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets in the data section
  uint64_t end = 0;
};

// A whole file laid out in memory: the header (its entries in order, contiguous) and room for
// every tensor's bytes, which the caller fills through data(entry) before writing image(). The
// memory is not cleared, and lay_out() reuses it when it is large enough: a checkpoint of
// hundreds of MB then costs one copy, not a page fault per page as well.
class FileImage {
 public:
  FileImage() = default;
  FileImage(std::vector<TensorEntry> entries_without_offsets,
            const std::map<std::string, std::string>& metadata) {
    lay_out(std::move(entries_without_offsets), metadata);
  }
  void lay_out(std::vector<TensorEntry> entries_without_offsets,
               const std::map<std::string, std::string>& metadata);
  const std::vector<TensorEntry>& entries() const { return entries_; }
  char* data(size_t entry) { return bytes_.get() + data_start_ + entries_[entry].begin; }
  std::string_view image() const { return {bytes_.get(), size_}; }

 private:
  std::vector<TensorEntry> entries_;
  size_t data_start_ = 0;
  std::unique_ptr<char[]> bytes_;
  size_t size_ = 0, capacity_ = 0;
};

// A file's parsed header. parse() checks everything before anything is read through it: the
// header length against the file, the JSON, every entry's dtype, shape (elements × dtype size =
// its byte range, without overflow) and range (inside the file, contiguous, no overlap) — and
// throws an Error "<what>: <what is wrong>" otherwise.
struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<TensorEntry> entries;  // in offset order
  uint64_t data_start = 0;           // file offset of the data section
  static Header parse(std::string_view file, std::string_view what);
  const TensorEntry* find(std::string_view name) const;
};

// A file's bytes with its header parsed; read() copies one tensor out.
class File {
 public:
  // `bytes` is the whole file (read by the caller, who also checked its checksum).
  File(std::string bytes, std::string what);
  const Header& header() const { return header_; }
  const std::string& what() const { return what_; }
  const char* data(const TensorEntry& entry) const {
    return bytes_.data() + header_.data_start + entry.begin;
  }

 private:
  std::string bytes_;
  std::string what_;
  Header header_;
};

}  // namespace tandem::safetensors
