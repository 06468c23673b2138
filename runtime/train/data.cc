// Memory-mapped token files, splits and deterministic sampling.
#include "runtime/train/data.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "runtime/core/input_file.h"
#include "runtime/core/random.h"

namespace tandem {

MappedFile::MappedFile(std::string_view what, const std::string& path, std::string_view fix)
    : path_(path) {
  struct stat info {};
  const OwnedFd fd = open_input_file(what, path, fix, &info);
  size_ = static_cast<size_t>(info.st_size);
  if (size_ > 0) {
    void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    TANDEM_USER_CHECK(map != MAP_FAILED, what, " '", path,
                      "': cannot be mapped: ", std::strerror(errno));
    data_ = static_cast<const uint8_t*>(map);
  }
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

int32_t TokenSpan::at(int64_t i) const {
  const uint8_t* p = file->data() + (begin + i) * bytes_per_token;
  return bytes_per_token == 1 ? p[0] : static_cast<int32_t>(p[0] | (p[1] << 8));
}

namespace {
TokenSpan whole_uint16_file(const std::shared_ptr<MappedFile>& file, int64_t vocab_size) {
  TANDEM_USER_CHECK(file->size() % 2 == 0, "token file '", file->path(), "' has ", file->size(),
                    " bytes, not a whole number of uint16 tokens; is data.format right?");
  TokenSpan span{file.get(), 2, 0, static_cast<int64_t>(file->size() / 2)};
  for (int64_t i = 0; i < span.length; ++i) {
    const int32_t token = span.at(i);
    TANDEM_USER_CHECK(token < vocab_size, "token file '", file->path(), "' holds token ", token,
                      " at position ", i, ", not below model.vocab_size = ", vocab_size);
  }
  return span;
}

void check_long_enough(const TokenSpan& span, int64_t seq_len, const char* what) {
  TANDEM_USER_CHECK(span.length >= seq_len + 1, what, " of '", span.file->path(), "' has ",
                    span.length, " tokens; it needs at least model.seq_len + 1 = ", seq_len + 1);
}
}  // namespace

Dataset Dataset::open(const DataConfig& data, const ModelConfig& model) {
  Dataset ds;
  ds.train_file_ = std::make_shared<MappedFile>(
      "data.path", data.path,
      "for the default corpus run scripts/prepare-data (or `make data`); otherwise set data.path "
      "to an existing file");
  if (!data.val_path.empty()) {
    ds.held_out_file_ = std::make_shared<MappedFile>(
        "data.val_path", data.val_path, "set data.val_path to an existing file of held-out data");
    // A held-out loss measured on the training data would look like generalisation.
    struct stat train {
    }, held_out{};
    TANDEM_USER_CHECK(::stat(data.path.c_str(), &train) != 0 ||
                          ::stat(data.val_path.c_str(), &held_out) != 0 ||
                          train.st_dev != held_out.st_dev || train.st_ino != held_out.st_ino,
                      "data.val_path '", data.val_path, "' is the same file as data.path '",
                      data.path, "'; give held-out data of its own (or leave data.val_path empty ",
                      "to hold out the end of a text corpus)");
  }
  if (data.format == DataFormat::kText && ds.held_out_file_) {
    // A held-out text of its own: the whole corpus trains, data.val_fraction is not used.
    ds.train_ = {ds.train_file_.get(), 1, 0, static_cast<int64_t>(ds.train_file_->size())};
    ds.held_out_ = {ds.held_out_file_.get(), 1, 0, static_cast<int64_t>(ds.held_out_file_->size())};
  } else if (data.format == DataFormat::kText) {
    const int64_t total = static_cast<int64_t>(ds.train_file_->size());
    const int64_t held = static_cast<int64_t>(total * data.val_fraction);
    ds.train_ = {ds.train_file_.get(), 1, 0, total - held};
    ds.held_out_ = {ds.train_file_.get(), 1, total - held, held};
  } else {
    ds.train_ = whole_uint16_file(ds.train_file_, model.vocab_size);
    ds.held_out_ = whole_uint16_file(ds.held_out_file_, model.vocab_size);
  }
  check_long_enough(ds.train_, model.seq_len, "the training split");
  check_long_enough(ds.held_out_, model.seq_len, "the held-out split");
  return ds;
}

FileDataSource::FileDataSource(Dataset dataset, int64_t seq_len, uint64_t seed)
    : dataset_(std::move(dataset)), seq_len_(seq_len), seed_(seed) {}

void FileDataSource::sequence(Split split, int64_t batch, int64_t index,
                              std::span<int32_t> tokens) const {
  const TokenSpan& span = dataset_.split(split);
  const uint64_t stream = split == Split::kTrain ? 0x7261696eu : 0x68656c64u;
  // A sequence and its shifted targets need seq_len + 1 tokens: starts 0 .. length − seq_len − 1.
  const uint64_t starts = static_cast<uint64_t>(span.length - seq_len_);
  const uint64_t key = (static_cast<uint64_t>(batch) << 24) + static_cast<uint64_t>(index);
  const int64_t start = static_cast<int64_t>(random_bits(seed_, stream, key) % starts);
  for (int64_t t = 0; t <= seq_len_; ++t) tokens[t] = span.at(start + t);
}

namespace {

// A program's source, checked: every token below the vocabulary (the files' tokens are checked
// once, when Dataset::open maps them).
class CheckedDataSource final : public DataSource {
 public:
  CheckedDataSource(std::shared_ptr<const DataSource> source, int64_t vocab_size)
      : source_(std::move(source)), vocab_size_(vocab_size) {}
  void sequence(Split split, int64_t batch, int64_t index,
                std::span<int32_t> tokens) const override {
    // A source that leaves tokens unwritten is found by the bound check below.
    std::fill(tokens.begin(), tokens.end(), -1);
    source_->sequence(split, batch, index, tokens);
    for (size_t t = 0; t < tokens.size(); ++t)
      TANDEM_USER_CHECK(tokens[t] >= 0 && tokens[t] < vocab_size_, "data source: token ", t,
                        " of sequence ", index, " of ",
                        split == Split::kTrain ? "training" : "held-out", " batch ", batch, " is ",
                        tokens[t], ", outside the vocabulary [0, ", vocab_size_,
                        ") (model.vocab_size); return seq_len + 1 = ", tokens.size(),
                        " tokens below model.vocab_size");
  }

 private:
  std::shared_ptr<const DataSource> source_;
  int64_t vocab_size_;
};

}  // namespace

std::shared_ptr<const DataSource> open_data_source(const Config& config,
                                                   std::shared_ptr<const DataSource> given) {
  if (given) return std::make_shared<CheckedDataSource>(std::move(given), config.model.vocab_size);
  return std::make_shared<FileDataSource>(Dataset::open(config.data, config.model),
                                          config.model.seq_len,
                                          static_cast<uint64_t>(config.train.seed));
}

DataLoader::DataLoader(std::shared_ptr<const DataSource> source, int64_t seq_len)
    : source_(std::move(source)), seq_len_(seq_len) {
  TANDEM_CHECK(source_ != nullptr, "a data loader needs a data source");
}

DataLoader::DataLoader(const Dataset& dataset, int64_t seq_len, uint64_t seed)
    : DataLoader(std::make_shared<FileDataSource>(dataset, seq_len, seed), seq_len) {}

void DataLoader::fill(Split split, int64_t batch, int64_t first, int64_t count, Tensor& tokens,
                      Tensor& targets) const {
  check_shape(tokens, {count * seq_len_}, "batch tokens");
  check_shape(targets, {count * seq_len_}, "batch targets");
  int32_t* tok = tokens.data<int32_t>();
  int32_t* tgt = targets.data<int32_t>();
  std::vector<int32_t> sequence(static_cast<size_t>(seq_len_ + 1));
  for (int64_t s = 0; s < count; ++s) {
    source_->sequence(split, batch, first + s, sequence);
    std::copy_n(sequence.begin(), seq_len_, tok + s * seq_len_);
    std::copy_n(sequence.begin() + 1, seq_len_, tgt + s * seq_len_);
  }
}

}  // namespace tandem
