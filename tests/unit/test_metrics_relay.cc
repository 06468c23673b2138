// The node endpoint's parts that live in the library: the rank-to-launcher wire (frames arriving
// in pieces, a broken peer refused), the merge of several ranks' expositions (each family once,
// every rank's samples), and a rank's relay against a launcher played by the test: the hello
// carries the configuration, the launcher's refusal is the rank's usage error, requests are
// answered by number, "not serving" before serve().
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>

#include "monitoring/exposition_merge.h"
#include "monitoring/metrics.h"
#include "monitoring/metrics_channel.h"
#include "monitoring/metrics_relay.h"
#include "runtime/core/errors.h"
#include "runtime/core/owned_fd.h"

namespace tandem::monitoring {
namespace {

TEST(MetricsChannel, FramesSurviveArrivingInPieces) {
  const std::string bytes = encode_frame({FrameKind::kReply, 7, "body one"}) +
                            encode_frame({FrameKind::kNotServing, 8, ""});
  FrameReader reader;
  std::vector<Frame> frames;
  for (char c : bytes) {
    reader.append(std::string(1, c));
    while (auto f = reader.next()) frames.push_back(*f);
  }
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].kind, FrameKind::kReply);
  EXPECT_EQ(frames[0].request, 7u);
  EXPECT_EQ(frames[0].body, "body one");
  EXPECT_EQ(frames[1].kind, FrameKind::kNotServing);
  EXPECT_EQ(frames[1].request, 8u);
  FrameReader broken;
  broken.append("GET /metrics HTTP/1.1\r\n");
  EXPECT_THROW(broken.next(), Error) << "not tandem's wire";
}

TEST(MetricsChannel, HelloCarriesTheConfiguration) {
  const RelayHello hello{"0.0.0.0", 9400, "/t/job.json", "big", 17, 1, 2048, "node-3"};
  const RelayHello back = decode_hello(encode_hello(hello));
  EXPECT_EQ(back.bind, "0.0.0.0");
  EXPECT_EQ(back.port, 9400);
  EXPECT_EQ(back.sd_file, "/t/job.json");
  EXPECT_EQ(back.job, "big");
  EXPECT_EQ(back.rank, 17);
  EXPECT_EQ(back.local_rank, 1);
  EXPECT_EQ(back.world_size, 2048);
  EXPECT_EQ(back.node, "node-3");
  EXPECT_THROW(decode_hello("{}"), Error);
}

TEST(ExpositionMerge, EachFamilyOnceWithEveryRanksSamples) {
  RankMetrics rank0({0, "host-a", 0}), rank1({1, "host-a", 0});
  rank0.place({0, {}, 0});
  rank1.place({0, {}, 0});
  const std::string merged = merge_expositions({rank0.exposition(), rank1.exposition()});
  for (const char* family : {"tandem_steps_total", "tandem_step_seconds", "tandem_build_info"}) {
    SCOPED_TRACE(family);
    const std::string type = std::string("# TYPE ") + family + " ";
    const size_t first = merged.find(type);
    ASSERT_NE(first, std::string::npos);
    EXPECT_EQ(merged.find(type, first + 1), std::string::npos) << "TYPE twice";
    // Both ranks' samples come after the TYPE line and before the next family's.
    const size_t next = merged.find("# HELP ", first);
    const std::string block = merged.substr(first, next - first);
    EXPECT_NE(block.find("rank=\"0\""), std::string::npos);
    EXPECT_NE(block.find("rank=\"1\""), std::string::npos);
  }
  // Nothing lost: every sample line of either rank is in the merge.
  size_t samples = 0;
  for (const std::string& text : {rank0.exposition(), rank1.exposition()})
    for (size_t at = 0; (at = text.find("\ntandem_", at)) != std::string::npos; ++at) ++samples;
  size_t merged_samples = 0;
  for (size_t at = 0; (at = merged.find("\ntandem_", at)) != std::string::npos; ++at)
    ++merged_samples;
  EXPECT_EQ(merged_samples, samples);
}

// The launcher's end of a relay, played by the test.
struct FakeLauncher {
  OwnedFd mine, theirs;
  FrameReader reader;
  FakeLauncher() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    mine = OwnedFd(fds[0]);
    theirs = OwnedFd(fds[1]);
  }
  Frame read_frame() {
    while (true) {
      if (auto f = reader.next()) return *f;
      char buffer[65536];
      const ssize_t n = ::read(mine.get(), buffer, sizeof buffer);
      if (n <= 0) throw Error("the relay closed its socket");
      reader.append({buffer, static_cast<size_t>(n)});
    }
  }
  void send(const Frame& frame) {
    const std::string bytes = encode_frame(frame);
    ASSERT_EQ(::write(mine.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
};

TEST(MetricsRelay, TheLaunchersRefusalIsTheRanksUsageError) {
  FakeLauncher launcher;
  std::thread answer([&] {
    const Frame hello = launcher.read_frame();
    EXPECT_EQ(hello.kind, FrameKind::kHello);
    EXPECT_EQ(decode_hello(hello.body).port, 9400);
    launcher.send({FrameKind::kHelloAnswer, 0,
                   nlohmann::json{{"error", "monitoring.metrics_port: taken"}}.dump()});
  });
  try {
    MetricsRelay relay(std::move(launcher.theirs), {"127.0.0.1", 9400, "", "j", 0, 0, 2, "h"});
    ADD_FAILURE() << "no error";
  } catch (const UsageError& error) {
    EXPECT_STREQ(error.what(), "monitoring.metrics_port: taken");
  }
  answer.join();
}

TEST(MetricsRelay, AnswersEachRequestByNumber) {
  FakeLauncher launcher;
  std::thread answer([&] {
    launcher.read_frame();
    launcher.send({FrameKind::kHelloAnswer, 0, nlohmann::json{{"endpoint", "h:9400"}}.dump()});
  });
  MetricsRelay relay(std::move(launcher.theirs), {"127.0.0.1", 9400, "", "j", 1, 1, 2, "h"});
  answer.join();
  EXPECT_EQ(relay.endpoint(), "h:9400");
  EXPECT_FALSE(relay.ranks_write_targets_file());
  launcher.send({FrameKind::kAskMetrics, 41, ""});
  Frame reply = launcher.read_frame();
  EXPECT_EQ(reply.kind, FrameKind::kNotServing) << "before serve()";
  EXPECT_EQ(reply.request, 41u);
  RankMetrics metrics({1, "h", 0});
  metrics.place({0, {}, 0});
  relay.serve(metrics);
  relay.serve_status([] { return std::string("<html>page</html>"); });
  launcher.send({FrameKind::kAskMetrics, 42, ""});
  launcher.send({FrameKind::kAskStatus, 43, ""});
  reply = launcher.read_frame();
  EXPECT_EQ(reply.kind, FrameKind::kReply);
  EXPECT_EQ(reply.request, 42u);
  EXPECT_NE(reply.body.find("tandem_steps_total{"), std::string::npos);
  reply = launcher.read_frame();
  EXPECT_EQ(reply.request, 43u);
  EXPECT_EQ(reply.body, "<html>page</html>");
}

}  // namespace
}  // namespace tandem::monitoring
