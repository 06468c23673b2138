// Token files, splits and deterministic sampling.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "runtime/train/data.h"
#include "tests/unit/error_text.h"

namespace tandem {
namespace {

std::string write_file(const std::string& name, const std::string& bytes) {
  const auto path = std::filesystem::temp_directory_path() / ("tandem_test_" + name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}

std::string uint16_file(const std::string& name, const std::vector<uint16_t>& tokens) {
  std::string bytes;
  for (uint16_t t : tokens) bytes += {static_cast<char>(t & 0xff), static_cast<char>(t >> 8)};
  return write_file(name, bytes);
}

using testing::error_of;

TEST(Data, TextSplitsAndTargetsAreShiftedTokens) {
  // Byte i of the corpus is i, so every token names its own position.
  std::string text;
  for (int i = 0; i < 250; ++i) text += static_cast<char>(i);
  DataConfig dc;
  dc.path = write_file("corpus.txt", text);
  dc.val_fraction = 0.25;
  ModelConfig mc;
  mc.seq_len = 16;
  Dataset ds = Dataset::open(dc, mc);
  EXPECT_EQ(ds.split(Split::kTrain).length, 188);
  EXPECT_EQ(ds.split(Split::kHeldOut).begin, 188);
  DataLoader loader(ds, 16, 5);
  const int64_t count = 64;
  Tensor tokens = Tensor::empty({count * 16}, DType::kI32), targets = tokens.clone();
  int32_t last_target = 0, first_token = 255;
  for (int64_t batch = 0; batch < 20; ++batch) {
    loader.fill(Split::kTrain, batch, 0, count, tokens, targets);
    for (int64_t s = 0; s < count; ++s)
      for (int64_t t = 0; t < 16; ++t) {
        const int32_t tok = tokens.data<int32_t>()[s * 16 + t];
        const int32_t tgt = targets.data<int32_t>()[s * 16 + t];
        EXPECT_EQ(tok, tokens.data<int32_t>()[s * 16] + t);  // contiguous
        EXPECT_EQ(tgt, tok + 1);                             // shifted by one
        EXPECT_LT(tgt, 188);                                 // never into the held-out split
        last_target = std::max(last_target, tgt);
        first_token = std::min(first_token, tok);
      }
  }
  EXPECT_EQ(last_target, 187);  // the last training token is reachable as a target
  EXPECT_EQ(first_token, 0);
  // Held-out samples come from the held-out split only.
  loader.fill(Split::kHeldOut, 0, 0, count, tokens, targets);
  for (int64_t i = 0; i < count * 16; ++i) EXPECT_GE(tokens.data<int32_t>()[i], 188);
  // Deterministic: sequence 2 of batch 4 is the same whether filled alone or with others.
  loader.fill(Split::kTrain, 4, 0, 3, tokens = Tensor::empty({48}, DType::kI32),
              targets = Tensor::empty({48}, DType::kI32));
  Tensor one = Tensor::empty({16}, DType::kI32), one_t = one.clone();
  loader.fill(Split::kTrain, 4, 2, 1, one, one_t);
  for (int64_t t = 0; t < 16; ++t)
    EXPECT_EQ(one.data<int32_t>()[t], tokens.data<int32_t>()[32 + t]);
}

TEST(Data, ReadsNanoGptUint16Files) {
  std::vector<uint16_t> train(100), val(50);
  for (int i = 0; i < 100; ++i) train[i] = static_cast<uint16_t>(1000 + i);
  for (int i = 0; i < 50; ++i) val[i] = static_cast<uint16_t>(60000 + i);
  DataConfig dc;
  dc.format = DataFormat::kUint16;
  dc.path = uint16_file("train.bin", train);
  dc.val_path = uint16_file("val.bin", val);
  ModelConfig mc;
  mc.vocab_size = 65536;
  mc.seq_len = 8;
  Dataset ds = Dataset::open(dc, mc);
  EXPECT_EQ(ds.split(Split::kTrain).length, 100);
  EXPECT_EQ(ds.split(Split::kTrain).at(7), 1007);
  EXPECT_EQ(ds.split(Split::kHeldOut).at(3), 60003);
  mc.vocab_size = 50000;
  EXPECT_NE(error_of([&] {
              Dataset::open(dc, mc);
            }).find("holds token 60000 at position 0, not below model.vocab_size = 50000"),
            std::string::npos);
}

TEST(Data, BadFilesGetClearErrors) {
  DataConfig dc;
  ModelConfig mc;
  dc.path = "/nonexistent/corpus.txt";
  EXPECT_NE(error_of([&] { Dataset::open(dc, mc); })
                .find("data.path '/nonexistent/corpus.txt': does not exist; for the default corpus "
                      "run scripts/prepare-data"),
            std::string::npos);
  dc.format = DataFormat::kUint16;
  dc.path = write_file("odd.bin", "abc");
  dc.val_path = dc.path;
  EXPECT_NE(error_of([&] {
              Dataset::open(dc, mc);
            }).find("data.val_path '" + dc.path + "' is the same file as data.path"),
            std::string::npos);
  dc.val_path = write_file("odd_val.bin", "abc");
  EXPECT_NE(error_of([&] { Dataset::open(dc, mc); }).find("not a whole number of uint16 tokens"),
            std::string::npos);
  dc.format = DataFormat::kText;
  dc.path = write_file("short.txt", "too short");
  EXPECT_NE(error_of([&] { Dataset::open(dc, mc); }).find("needs at least model.seq_len + 1"),
            std::string::npos);
  dc.path = std::filesystem::temp_directory_path().string();
  EXPECT_NE(error_of([&] { Dataset::open(dc, mc); }).find("is a directory, not a regular file"),
            std::string::npos);
  // A FIFO would block open() until a writer came: refused at once instead.
  const std::string fifo = (std::filesystem::temp_directory_path() / "tandem_test_fifo").string();
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  dc.path = write_file("corpus.txt", std::string(1000, 'a'));
  dc.val_path = fifo;
  EXPECT_NE(error_of([&] {
              Dataset::open(dc, mc);
            }).find("data.val_path '" + fifo + "': is a FIFO, not a regular file"),
            std::string::npos);
  std::filesystem::remove(fifo);
}

// With format text, data.val_path is a held-out text of its own: the corpus trains whole.
TEST(Data, TextHeldOutFileIsUsed) {
  DataConfig dc;
  dc.path = write_file("train_text.txt", std::string(300, 'a'));
  dc.val_path = write_file("val_text.txt", std::string(100, 'b'));
  ModelConfig mc;
  mc.seq_len = 16;
  Dataset ds = Dataset::open(dc, mc);
  EXPECT_EQ(ds.split(Split::kTrain).length, 300);
  EXPECT_EQ(ds.split(Split::kHeldOut).length, 100);
  DataLoader loader(ds, 16, 5);
  Tensor tokens = Tensor::empty({4 * 16}, DType::kI32), targets = tokens.clone();
  loader.fill(Split::kHeldOut, 0, 0, 4, tokens, targets);
  for (int64_t i = 0; i < 4 * 16; ++i) EXPECT_EQ(tokens.data<int32_t>()[i], 'b');
  loader.fill(Split::kTrain, 0, 0, 4, tokens, targets);
  for (int64_t i = 0; i < 4 * 16; ++i) EXPECT_EQ(tokens.data<int32_t>()[i], 'a');
}

}  // namespace
}  // namespace tandem
