// The safetensors format: building a file image and parsing a file's header with every check.
#include "runtime/train/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"

namespace tandem::safetensors {

namespace {

// The reference implementation refuses larger headers too: no real file needs one.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

constexpr std::pair<DType, std::string_view> kNames[] = {
    {DType::kF32, "F32"},        {DType::kF64, "F64"},        {DType::kBF16, "BF16"},
    {DType::kF8E4M3, "F8_E4M3"}, {DType::kF8E5M2, "F8_E5M2"}, {DType::kI32, "I32"},
    {DType::kI64, "I64"},        {DType::kU8, "U8"},
};

uint64_t read_le64(const char* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = value << 8 | static_cast<unsigned char>(p[i]);
  return value;
}

// A non-negative integer that fits in int64, or an Error.
uint64_t unsigned_of(const nlohmann::json& value, std::string_view what, const std::string& name,
                     const char* field) {
  TANDEM_USER_CHECK(
      value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0), what,
      ": tensor '", name, "': ", field, " holds ", value.dump(), ", not a non-negative integer");
  const uint64_t out = value.get<uint64_t>();
  TANDEM_USER_CHECK(out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what,
                    ": tensor '", name, "': ", field, " ", out, " is too large");
  return out;
}

}  // namespace

std::string_view name_of(DType dtype) {
  for (const auto& [d, name] : kNames)
    if (d == dtype) return name;
  TANDEM_FAIL("no safetensors name for dtype ", static_cast<int>(dtype));
}

DType dtype_of(std::string_view name, std::string_view what) {
  for (const auto& [d, n] : kNames)
    if (n == name) return d;
  std::string known;
  for (const auto& [d, n] : kNames) known += (known.empty() ? "" : ", ") + std::string(n);
  TANDEM_USER_FAIL(what, ": dtype '", name, "' is not one tandem reads (", known, ")");
}

void FileImage::lay_out(std::vector<TensorEntry> entries,
                        const std::map<std::string, std::string>& metadata) {
  entries_ = std::move(entries);
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (TensorEntry& e : entries_) {
    int64_t elements = 1;
    for (int64_t d : e.shape) elements *= d;
    e.begin = offset;
    e.end = offset + static_cast<uint64_t>(elements) * dtype_size(e.dtype);
    offset = e.end;
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(name_of(e.dtype));
    entry["shape"] = e.shape;
    entry["data_offsets"] = std::vector<uint64_t>{e.begin, e.end};
    header[e.name] = std::move(entry);
  }
  std::string text = header.dump();
  // Padded so that the data starts at a multiple of 8: every tensor (F64 first or not) is then
  // at least as aligned as its offset, and entries of one dtype are aligned to their size.
  text.append((8 - text.size() % 8) % 8, ' ');
  data_start_ = 8 + text.size();
  size_ = data_start_ + offset;
  if (size_ > capacity_) {
    bytes_ = std::make_unique_for_overwrite<char[]>(size_);
    capacity_ = size_;
  }
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) bytes_[i] = static_cast<char>(n >> (8 * i) & 0xff);
  std::memcpy(bytes_.get() + 8, text.data(), text.size());
}

Header Header::parse(std::string_view file, std::string_view what) {
  TANDEM_USER_CHECK(file.size() >= 8, what, ": ", file.size(),
                    " bytes, shorter than the 8-byte header length (truncated?)");
  const uint64_t n = read_le64(file.data());
  TANDEM_USER_CHECK(n <= kMaxHeaderBytes, what, ": header length ", n,
                    " bytes is larger than any real header (", kMaxHeaderBytes,
                    "); not a safetensors file, or a damaged one");
  TANDEM_USER_CHECK(8 + n <= file.size(), what, ": header length ", n, " bytes but the file has ",
                    file.size(), " (truncated?)");
  Header out;
  out.data_start = 8 + n;
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(file.substr(8, n));
  } catch (const nlohmann::json::exception& e) {
    TANDEM_USER_FAIL(what, ": the header is not valid JSON (", e.what(), ")");
  }
  TANDEM_USER_CHECK(json.is_object(), what, ": the header is not a JSON object");
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      TANDEM_USER_CHECK(value.is_object(), what, ": __metadata__ is not an object");
      for (const auto& [key, text] : value.items()) {
        TANDEM_USER_CHECK(text.is_string(), what, ": __metadata__['", key,
                          "'] is not a string (the format allows only strings)");
        out.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    TANDEM_USER_CHECK(value.is_object() && value.contains("dtype") && value.contains("shape") &&
                          value.contains("data_offsets"),
                      what, ": tensor '", name, "' lacks dtype, shape or data_offsets");
    TANDEM_USER_CHECK(value["dtype"].is_string(), what, ": tensor '", name,
                      "': dtype is not a string");
    TensorEntry e;
    e.name = name;
    e.dtype = dtype_of(value["dtype"].get<std::string>(), what);
    TANDEM_USER_CHECK(value["shape"].is_array(), what, ": tensor '", name,
                      "': shape is not an array");
    uint64_t elements = 1;
    for (const auto& d : value["shape"]) {
      const uint64_t extent = unsigned_of(d, what, name, "shape");
      TANDEM_USER_CHECK(extent == 0 || elements <= (uint64_t{1} << 62) / extent, what, ": tensor '",
                        name, "': shape ", value["shape"].dump(), " is too large");
      elements *= extent;
      e.shape.push_back(static_cast<int64_t>(extent));
    }
    const auto& offsets = value["data_offsets"];
    TANDEM_USER_CHECK(offsets.is_array() && offsets.size() == 2, what, ": tensor '", name,
                      "': data_offsets is not [begin, end]");
    e.begin = unsigned_of(offsets[0], what, name, "data_offsets");
    e.end = unsigned_of(offsets[1], what, name, "data_offsets");
    TANDEM_USER_CHECK(e.begin <= e.end && e.end - e.begin == elements * dtype_size(e.dtype), what,
                      ": tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] hold ",
                      e.end - std::min(e.begin, e.end), " bytes but shape ", value["shape"].dump(),
                      " of ", name_of(e.dtype), " needs ", elements * dtype_size(e.dtype));
    out.entries.push_back(std::move(e));
  }
  std::sort(out.entries.begin(), out.entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const TensorEntry& e : out.entries) {
    TANDEM_USER_CHECK(e.begin == at, what, ": tensor '", e.name, "' starts at byte ", e.begin,
                      " of the data, expected ", at,
                      " (tensors must tile the data without gaps or overlaps)");
    at = e.end;
  }
  TANDEM_USER_CHECK(out.data_start + at == file.size(), what, ": the tensors end at byte ",
                    out.data_start + at, " but the file has ", file.size(),
                    " bytes (truncated, or extra bytes at the end)");
  return out;
}

const TensorEntry* Header::find(std::string_view name) const {
  for (const TensorEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

File::File(std::string bytes, std::string what)
    : bytes_(std::move(bytes)), what_(std::move(what)), header_(Header::parse(bytes_, what_)) {}

}  // namespace tandem::safetensors
