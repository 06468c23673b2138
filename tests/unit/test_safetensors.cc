// The safetensors reader refuses every malformed header with a message naming the problem, and
// reads back what FileImage wrote.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "runtime/train/safetensors.h"

namespace tandem::safetensors {
namespace {

std::string file_of(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

void expect_refused(const std::string& file, const std::string& fragment) {
  try {
    Header::parse(file, "f.safetensors");
    ADD_FAILURE() << "accepted; expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("f.safetensors", 0), 0u) << e.what();
  }
}

TEST(Safetensors, WritesWhatItReadsBack) {
  FileImage image({{"b", DType::kF32, {2, 3}, 0, 0}, {"a", DType::kBF16, {5}, 0, 0}},
                  {{"format", "pt"}});
  for (int i = 0; i < 6; ++i) {
    const float v = static_cast<float>(i) + 0.5f;
    std::memcpy(image.data(0) + 4 * i, &v, 4);
  }
  const Header h = Header::parse(image.image(), "image");
  EXPECT_EQ(h.data_start % 8, 0u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  ASSERT_EQ(h.entries.size(), 2u);
  EXPECT_EQ(h.entries[0].name, "b");  // in offset order, as written
  EXPECT_EQ(h.entries[0].shape, (Shape{2, 3}));
  EXPECT_EQ(h.entries[1].dtype, DType::kBF16);
  EXPECT_EQ(h.entries[1].begin, 24u);
  EXPECT_EQ(h.entries[1].end, 34u);
  float third;
  std::memcpy(&third, image.image().data() + h.data_start + 8, 4);
  EXPECT_EQ(third, 2.5f);
}

TEST(Safetensors, RefusesMalformedFiles) {
  expect_refused("abc", "shorter than the 8-byte header length");
  expect_refused(file_of("{}", 0).substr(0, 9), "header length 2 bytes but the file has 9");
  std::string huge(8, '\xff');
  expect_refused(huge, "larger than any real header");
  expect_refused(file_of("{not json", 0), "not valid JSON");
  expect_refused(file_of("[1]", 0), "not a JSON object");
  expect_refused(file_of(R"({"t":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", 2),
                 "dtype 'F16' is not one tandem reads");
  expect_refused(file_of(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4),
                 "needs 8");
  expect_refused(file_of(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                 "not a non-negative integer");
  expect_refused(file_of(R"({"t":{"dtype":"F32","shape":[1]}})", 4), "lacks dtype, shape or");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                 "starts at byte 4 of the data, expected 0");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                         4),
                 "without gaps or overlaps");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6),
                 "extra bytes at the end");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 3),
                 "truncated");
  expect_refused(file_of(R"({"__metadata__":{"k":1}})", 0), "is not a string");
  expect_refused(
      file_of(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})", 4),
      "is too large");
}

}  // namespace
}  // namespace tandem::safetensors
