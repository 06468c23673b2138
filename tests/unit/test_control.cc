// The control plane's parts that need no network: the learning-rate change (exact at its step,
// the schedule's shape after it, a JSON record that round-trips), the board between the gRPC
// threads and the trainer (one command of a kind per boundary, nothing left unanswered), the
// step boundary's agreement in one process, and the token (stripped, checked, written 0600).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kernels/optimizer.h"
#include "monitoring/control_board.h"
#include "monitoring/control_token.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/step_boundary.h"
#include "tests/unit/error_text.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using monitoring::CommandKind;
using monitoring::CommandOutcome;
using testing::error_of;

TrainConfig schedule() {
  TrainConfig t;
  t.steps = 1000;
  t.warmup_steps = 30;
  t.lr = 3e-3;
  t.min_lr = 3e-4;
  return t;
}

TEST(LearningRateChange, ExactAtItsStepThenTheScheduleScaled) {
  const TrainConfig t = schedule();
  auto plain = [&](int64_t s) {
    return kernels::learning_rate_at(s, t.steps, t.warmup_steps, t.lr, t.min_lr);
  };
  // Rates whose ratio to the schedule is not a round number, in warmup and in the decay.
  for (const LearningRateChange change :
       {LearningRateChange{7, 1.0 / 3 * 1e-4}, LearningRateChange{412, 2.7182818e-4}}) {
    EXPECT_EQ(learning_rate_at(t, change.from_step, change), change.learning_rate);
    for (int64_t s = 0; s < change.from_step; ++s)
      EXPECT_EQ(learning_rate_at(t, s, change), plain(s));
    const double factor = change.learning_rate / plain(change.from_step);
    for (int64_t s = change.from_step + 1; s < t.steps; s += 37)
      EXPECT_NEAR(learning_rate_at(t, s, change), factor * plain(s), 1e-15 * plain(s)) << s;
  }
  EXPECT_EQ(learning_rate_at(t, 500, std::nullopt), plain(500));
}

TEST(LearningRateChange, RecordRoundTripsEveryBit) {
  const LearningRateChange change{123, 0.1 / 3};
  const nlohmann::json text = nlohmann::json::parse(learning_rate_change_to_json(change).dump());
  EXPECT_EQ(learning_rate_change_from_json(text, "manifest"), change);
  EXPECT_EQ(learning_rate_change_from_json(nullptr, "manifest"), std::nullopt);
  EXPECT_TRUE(learning_rate_change_to_json(std::nullopt).is_null());
  for (const char* bad :
       {R"({"from_step": -1, "learning_rate": 1e-4})", R"({"from_step": 3, "learning_rate": 0})",
        R"({"from_step": 3, "learning_rate": 2})", R"({"from_step": 3})", R"("fast")"}) {
    EXPECT_NE(error_of([&] {
                learning_rate_change_from_json(nlohmann::json::parse(bad), "m");
              }).find("m: the learning-rate change must be null or"),
              std::string::npos)
        << bad;
  }
}

TEST(LearningRateChange, ValidRatesAreTrainLrsRange) {
  for (double ok : {1e-8, 1e-4, 1.0}) EXPECT_TRUE(valid_learning_rate(ok)) << ok;
  for (double bad :
       {0.0, -1e-4, 1.5, std::numeric_limits<double>::quiet_NaN(),
        std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()})
    EXPECT_FALSE(valid_learning_rate(bad)) << bad;
}

TEST(ControlBoard, OneCommandOfAKindPerBoundaryInOrder) {
  monitoring::ControlBoard board;
  board.submit(CommandKind::kPause);
  board.submit(CommandKind::kSetLearningRate, 1e-4);
  board.submit(CommandKind::kResume);  // the pause state again: the next boundary's
  board.submit(CommandKind::kSetLearningRate, 2e-4);
  auto first = board.take();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0]->kind(), CommandKind::kPause);
  EXPECT_EQ(first[1]->learning_rate(), 1e-4);
  auto second = board.take();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0]->kind(), CommandKind::kResume);
  EXPECT_EQ(second[1]->learning_rate(), 2e-4);
  EXPECT_TRUE(board.take().empty());
}

// The answer a command got by now, or nothing.
std::optional<CommandOutcome> answered(const std::shared_future<CommandOutcome>& answer) {
  if (answer.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return std::nullopt;
  return answer.get();
}

TEST(ControlBoard, EveryCommandIsAnsweredOnce) {
  monitoring::ControlBoard board;
  const auto kept = board.submit(CommandKind::kCheckpoint);
  const auto dropped = board.submit(CommandKind::kStop);
  EXPECT_FALSE(answered(kept));
  auto taken = board.take();
  ASSERT_EQ(taken.size(), 2u);
  CommandOutcome ok;
  ok.step = 40;
  taken[0]->answer(ok);
  taken[0]->answer(CommandOutcome::failure(CommandOutcome::Code::kAborted, "ignored"));
  ASSERT_TRUE(answered(kept));
  EXPECT_EQ(answered(kept)->code, CommandOutcome::Code::kOk);
  EXPECT_EQ(answered(kept)->step, 40);
  // The trainer drops a command it never applied (the run failed): whoever asked hears so.
  EXPECT_FALSE(answered(dropped));
  taken.clear();
  ASSERT_TRUE(answered(dropped));
  EXPECT_EQ(answered(dropped)->code, CommandOutcome::Code::kUnavailable);
  // Closing answers what is queued, and whatever comes later.
  const auto queued = board.submit(CommandKind::kPause);
  board.close("the run has ended");
  ASSERT_TRUE(answered(queued));
  EXPECT_EQ(answered(queued)->code, CommandOutcome::Code::kUnavailable);
  EXPECT_EQ(answered(queued)->message, "the run has ended");
  const auto late = board.submit(CommandKind::kResume);
  ASSERT_TRUE(answered(late));
  EXPECT_EQ(answered(late)->code, CommandOutcome::Code::kUnavailable);
}

TEST(ControlBoard, WatchersSeeEveryNewStatus) {
  monitoring::ControlBoard board;
  monitoring::JobStatus s;
  EXPECT_FALSE(board.wait_for_status(0, std::chrono::milliseconds(1), &s));
  monitoring::JobStatus published;
  published.step = 12;
  board.publish(published);
  ASSERT_TRUE(board.wait_for_status(0, std::chrono::milliseconds(0), &s));
  EXPECT_EQ(s.step, 12);
  EXPECT_EQ(s.version, 1u);
  EXPECT_FALSE(board.wait_for_status(1, std::chrono::milliseconds(1), &s));
  board.close("done");
  EXPECT_FALSE(board.wait_for_status(1, std::chrono::seconds(10), &s));  // at once: closed
  EXPECT_TRUE(board.closed());
}

TEST(StepBoundary, OneProcessAgreesWithItself) {
  monitoring::ControlBoard board;
  bool signal = false;
  StepBoundary boundary(nullptr, &board, [&] { return signal; });
  EXPECT_EQ(boundary.doubles(), 10);  // 6 requests and one rank's four step times
  BoundaryDecision d = boundary.agree({0.25, 0.125, 0.0625, 0.5});
  EXPECT_FALSE(d.stop() || d.pause || d.resume || d.checkpoint || d.learning_rate);
  ASSERT_EQ(d.rank_times.size(), 1u);
  EXPECT_EQ(d.rank_times[0].compute, 0.25);
  EXPECT_EQ(d.rank_times[0].all_to_all_wait, 0.125);
  EXPECT_EQ(d.rank_times[0].pipeline_wait, 0.0625);
  EXPECT_EQ(d.rank_times[0].sync_wait, 0.5);
  board.submit(CommandKind::kSetLearningRate, 1.0 / 3 * 1e-3);
  board.submit(CommandKind::kCheckpoint);
  board.submit(CommandKind::kPause);
  board.submit(CommandKind::kStop);
  signal = true;
  d = boundary.agree({0.5});
  EXPECT_TRUE(d.stop_signal && d.stop_control && d.pause && d.checkpoint);
  EXPECT_FALSE(d.resume);
  EXPECT_EQ(d.learning_rate, 1.0 / 3 * 1e-3);  // bit for bit
  EXPECT_EQ(boundary.commands().size(), 4u);
}

class TemporaryHome {
 public:
  TemporaryHome() {
    std::string pattern = (fs::temp_directory_path() / "tandem_home_XXXXXX").string();
    TANDEM_CHECK(::mkdtemp(pattern.data()) != nullptr, "mkdtemp failed");
    path_ = pattern;
    if (const char* home = std::getenv("HOME")) saved_ = home;
    ::setenv("HOME", path_.c_str(), 1);
  }
  ~TemporaryHome() {
    ::setenv("HOME", saved_.c_str(), 1);
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_, saved_;
};

TEST(ControlToken, ReadStrippedAndChecked) {
  TemporaryHome home;
  const std::string file = home.path() + "/token";
  auto write = [&](const std::string& text) { std::ofstream(file) << text; };
  write("\n  s3cret \t\n");
  EXPECT_EQ(monitoring::read_token_file(file), "s3cret");
  write(" \n");
  EXPECT_NE(error_of([&] { monitoring::read_token_file(file); }).find("is empty"),
            std::string::npos);
  write("two words");
  EXPECT_NE(error_of([&] { monitoring::read_token_file(file); }).find("not printable ASCII"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              monitoring::read_token_file(home.path() + "/none");
            }).find("control token file '" + home.path() + "/none': does not exist"),
            std::string::npos);
}

TEST(ControlToken, GeneratedTokenIsTheOwnersOnly) {
  TemporaryHome home;
  ::unsetenv("TANDEM_CONTROL_TOKEN");
  const monitoring::ControlToken a = monitoring::resolve_control_token("", 29600);
  const monitoring::ControlToken b = monitoring::resolve_control_token("", 29600);
  EXPECT_EQ(a.value.size(), 64u);
  EXPECT_NE(a.value, b.value);
  EXPECT_EQ(a.generated_path, home.path() + "/.tandem/control-token-29600");
  EXPECT_EQ(a.generated_path, monitoring::default_token_path(29600));
  monitoring::write_generated_token(a);
  monitoring::write_generated_token(b);  // replaces it
  EXPECT_EQ(monitoring::read_token_file(a.generated_path), b.value);
  struct stat info {};
  ASSERT_EQ(::stat(a.generated_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((home.path() + "/.tandem").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  ::setenv("TANDEM_CONTROL_TOKEN", " from-env ", 1);
  const monitoring::ControlToken env = monitoring::resolve_control_token("", 29600);
  ::unsetenv("TANDEM_CONTROL_TOKEN");
  EXPECT_EQ(env.value, "from-env");
  EXPECT_TRUE(env.generated_path.empty());
}

TEST(ControlToken, ComparedWhole) {
  EXPECT_TRUE(monitoring::tokens_equal("abc", "abc"));
  EXPECT_FALSE(monitoring::tokens_equal("abc", "abd"));
  EXPECT_FALSE(monitoring::tokens_equal("abc", "abcd"));
  EXPECT_FALSE(monitoring::tokens_equal("", "a"));
}

}  // namespace
}  // namespace tandem
