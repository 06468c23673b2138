// The files tandem reads and writes: output paths refused unless they are regular files (or new)
// in a writable directory, atomic replacement that writes exactly the content or leaves the old
// file, no temporary file left behind or taken from anyone else, and input files refused with
// their reason, a FIFO without blocking.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/input_file.h"
#include "runtime/core/output_file.h"
#include "tests/unit/error_text.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

// A fresh directory, removed with everything in it at the end of the test.
class ScratchDirectory {
 public:
  ScratchDirectory() {
    std::string pattern = (fs::temp_directory_path() / "tandem_files_XXXXXX").string();
    TANDEM_CHECK(::mkdtemp(pattern.data()) != nullptr, "mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  // Every name in the directory, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(path_))
      out.push_back(entry.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_plain(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

// Content of every byte value, zeros included, and larger than one write() may take at once.
std::string awkward_content(size_t bytes, char seed) {
  std::string content(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) content[i] = static_cast<char>((i * 131 + seed) % 256);
  return content;
}

TEST(OutputFile, WritesExactlyTheContent) {
  ScratchDirectory dir;
  const std::string content = awkward_content(3 << 20, 7);
  write_output_file("test file", dir / "out.bin", content);
  EXPECT_EQ(read_all(dir / "out.bin"), content);
  write_output_file("test file", dir / "empty", "");
  EXPECT_TRUE(fs::is_regular_file(dir / "empty"));
  EXPECT_EQ(fs::file_size(dir / "empty"), 0u);
  EXPECT_EQ(dir.names(), (std::vector<std::string>{"empty", "out.bin"}));
}

TEST(OutputFile, ReplacesTheOldFileAndTouchesNoOtherName) {
  ScratchDirectory dir;
  write_plain(dir / "summary.json", "old content that is longer than the new one");
  // The user's own files of the names a careless writer would use for its temporary.
  write_plain(dir / "summary.json.tmp", "mine");
  write_plain(dir / ".summary.json.tmp", "mine too");
  check_output_path("--summary-json", dir / "summary.json");
  write_output_file("--summary-json", dir / "summary.json", "new");
  EXPECT_EQ(read_all(dir / "summary.json"), "new");
  EXPECT_EQ(read_all(dir / "summary.json.tmp"), "mine");
  EXPECT_EQ(read_all(dir / ".summary.json.tmp"), "mine too");
  EXPECT_EQ(dir.names(),
            (std::vector<std::string>{".summary.json.tmp", "summary.json", "summary.json.tmp"}));
}

TEST(OutputFile, ThePreCheckLeavesNothingBehind) {
  ScratchDirectory dir;
  check_output_path("--summary-json", dir / "new.json");
  EXPECT_TRUE(dir.names().empty());
  write_plain(dir / "old.json", "old");
  check_output_path("--summary-json", dir / "old.json");
  EXPECT_EQ(read_all(dir / "old.json"), "old");
  EXPECT_EQ(dir.names(), std::vector<std::string>{"old.json"});
}

// Each kind of thing that is not a regular file, refused by the pre-check and by the write alike,
// and still there, unchanged, afterwards.
TEST(OutputFile, RefusesWhatIsNotARegularFileAndLeavesItAlone) {
  ScratchDirectory dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
  write_plain(dir / "target", "precious");
  fs::create_symlink(dir / "target", dir / "link");
  fs::create_directory(dir / "subdir");
  std::vector<std::pair<std::string, std::string>> cases = {
      {dir / "fifo", "is a FIFO, not a regular file"},
      {dir / "link", "is a symbolic link (to '" + dir / "target" + "')"},
      {dir / "subdir", "is a directory"},
      {dir / "subdir/", "is a directory"},
  };
  // A character device: a copy of /dev/full in the scratch directory, so that a regression
  // replaces the copy and never the system's node; where no copy can be made (not root, or no
  // CAP_MKNOD), /dev/full is used only by a process that cannot write /dev.
  if (::mknod((dir / "full").c_str(), S_IFCHR | 0666, makedev(1, 7)) == 0)
    cases.emplace_back(dir / "full", "is a character device, not a regular file");
  else if (::access("/dev", W_OK) != 0)
    cases.emplace_back("/dev/full", "is a character device, not a regular file");
  else
    std::printf(
        "no character device case: cannot make a copy of /dev/full here, and /dev is "
        "writable, so a regression could replace the real one\n");
  for (const auto& [path, why] : cases) {
    const std::string expected = "--trace '" + path + "': " + why;
    EXPECT_NE(error_of([&] { check_output_path("--trace", path); }).find(expected),
              std::string::npos)
        << error_of([&] { check_output_path("--trace", path); });
    EXPECT_NE(error_of([&] { write_output_file("--trace", path, "x"); }).find(expected),
              std::string::npos)
        << error_of([&] { write_output_file("--trace", path, "x"); });
  }
  EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
  EXPECT_TRUE(fs::is_symlink(dir / "link"));
  EXPECT_EQ(read_all(dir / "target"), "precious");
  EXPECT_TRUE(fs::is_directory(dir / "subdir"));
  EXPECT_TRUE(fs::is_empty(dir / "subdir"));
  if (cases.size() == 5) {
    EXPECT_TRUE(fs::is_character_file(cases.back().first));
  }
  for (const std::string& name : dir.names())
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << "temporary file left: " << name;
}

TEST(OutputFile, RefusesAPathWhoseDirectoryIsMissingOrNotADirectory) {
  ScratchDirectory dir;
  write_plain(dir / "plain", "x");
  EXPECT_NE(error_of([&] { write_output_file("--summary-json", dir / "missing/s.json", "x"); })
                .find("--summary-json '" + dir / "missing/s.json" + "': its directory '" +
                      dir / "missing" + "' does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              check_output_path("--summary-json", dir / "plain/s.json");
            }).find("is a regular file, not a directory"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_output_path("--summary-json", ""); }).find("the path is empty"),
            std::string::npos);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"plain"});
}

// Limits the size of files this process writes (root too is bound by it), so that a write fails
// half-way with EFBIG as it would with a full disk; SIGXFSZ, which would end the process, is
// ignored meanwhile.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit limited = saved_;
    limited.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limited);
    saved_handler_ = std::signal(SIGXFSZ, SIG_IGN);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, saved_handler_);
  }

 private:
  rlimit saved_{};
  void (*saved_handler_)(int) = nullptr;
};

TEST(OutputFile, AWriteThatFailsHalfWayKeepsTheOldFile) {
  ScratchDirectory dir;
  write_plain(dir / "checkpoint", "the old, whole content");
  std::string message;
  {
    FileSizeLimit limit(4096);
    message = error_of(
        [&] { write_output_file("checkpoint", dir / "checkpoint", std::string(1 << 20, 'n')); });
  }
  EXPECT_NE(message.find("checkpoint '" + dir / "checkpoint" +
                         "': cannot write it: " + std::strerror(EFBIG)),
            std::string::npos)
      << message;
  EXPECT_EQ(read_all(dir / "checkpoint"), "the old, whole content");
  EXPECT_EQ(dir.names(), std::vector<std::string>{"checkpoint"});
}

// Writers that share a path never share a temporary file: every reader sees one writer's whole
// content, and no temporary is left when they are done.
TEST(OutputFile, ConcurrentWritersEachReplaceTheFileWhole) {
  ScratchDirectory dir;
  const std::string path = dir / "record.tsv";
  constexpr int kWriters = 4, kWrites = 25;
  std::vector<std::string> contents;
  for (int w = 0; w < kWriters; ++w) contents.push_back(awkward_content(200000 + w, char(w)));
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; i < kWrites; ++i) {
        try {
          write_output_file("flight record", path, contents[w]);
        } catch (const Error&) {
          ++failures;
        }
        const std::string seen = read_all(path);
        if (std::find(contents.begin(), contents.end(), seen) == contents.end()) ++failures;
      }
    });
  for (auto& writer : writers) writer.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"record.tsv"});
}

TEST(InputFile, ReadsExactlyTheContent) {
  ScratchDirectory dir;
  const std::string content = awkward_content(100000, 3);
  write_plain(dir / "in.bin", content);
  EXPECT_EQ(read_input_file("config file", dir / "in.bin", "fix"), content);
  fs::create_symlink(dir / "in.bin", dir / "link");  // a link to a regular file is read through
  EXPECT_EQ(read_input_file("config file", dir / "link", "fix"), content);
}

TEST(InputFile, SaysWhyAFileCannotBeRead) {
  ScratchDirectory dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
  // Without a writer, opening a FIFO for reading would wait for ever: this returns at once.
  EXPECT_NE(
      error_of([&] {
        read_input_file("data.path", dir / "fifo", "set data.path");
      }).find("data.path '" + dir / "fifo" + "': is a FIFO, not a regular file; set data.path"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              read_input_file("config file", dir / "none.toml", "give a TOML file");
            }).find("config file '" + dir / "none.toml" + "': does not exist; give a TOML file"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              read_input_file("config file", dir / "", "give a TOML file");
            }).find("is a directory, not a regular file; give a TOML file"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              read_input_file("config file", "/dev/null", "give a TOML file");
            }).find("is a character device, not a regular file"),
            std::string::npos);
  write_plain(dir / "plain", "x");
  EXPECT_NE(error_of([&] {
              read_input_file("config file", dir / "plain/x.toml", "fix");
            }).find("cannot be read: Not a directory"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem
