// Training data: token files memory-mapped from disk (a text file's bytes are its tokens under the
// byte-level tokenizer; nanoGPT's .bin files are little-endian uint16), a training and a held-out
// split, and deterministic sampling of sequences.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/core/config.h"
#include "runtime/core/tensor.h"
#include "tandem/data_source.h"

namespace tandem {

// A read-only memory map of a whole regular file, unmapped on destruction. `what` names the file in
// errors ("data.path"), `fix` says what to do when it is missing or not a regular file.
class MappedFile {
 public:
  MappedFile(std::string_view what, const std::string& path, std::string_view fix);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A range of tokens inside a mapped file.
struct TokenSpan {
  const MappedFile* file = nullptr;
  int bytes_per_token = 1;
  int64_t begin = 0;  // in tokens
  int64_t length = 0;
  int32_t at(int64_t i) const;
};

class Dataset {
 public:
  // Opens and checks the files named by the config (exists, readable, long enough, every token
  // below the vocabulary size); every failure names the file and what to do.
  static Dataset open(const DataConfig& data, const ModelConfig& model);
  const TokenSpan& split(Split which) const { return which == Split::kTrain ? train_ : held_out_; }

 private:
  std::shared_ptr<MappedFile> train_file_, held_out_file_;
  TokenSpan train_, held_out_;
};

// Sequence s of batch b of a split starts at an offset that is a pure function of
// (seed, split, b, s): any rank can build its share of any batch, and the data position to save
// in a checkpoint is just the next batch index.
class FileDataSource final : public DataSource {
 public:
  FileDataSource(Dataset dataset, int64_t seq_len, uint64_t seed);
  void sequence(Split split, int64_t batch, int64_t index,
                std::span<int32_t> tokens) const override;

 private:
  Dataset dataset_;
  int64_t seq_len_;
  uint64_t seed_;
};

// The data source a run reads: `given` (an embedding program's own, its tokens checked against
// model.vocab_size), or data.path's files.
std::shared_ptr<const DataSource> open_data_source(const Config& config,
                                                   std::shared_ptr<const DataSource> given);

// Batches of sequences from a data source, as the engines take them.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const DataSource> source, int64_t seq_len);
  DataLoader(const Dataset& dataset, int64_t seq_len, uint64_t seed);
  // tokens and targets (int32 [count·seq_len]) of sequences [first, first + count) of batch b;
  // targets are the tokens shifted by one.
  void fill(Split split, int64_t batch, int64_t first, int64_t count, Tensor& tokens,
            Tensor& targets) const;

 private:
  std::shared_ptr<const DataSource> source_;
  int64_t seq_len_;
};

}  // namespace tandem
