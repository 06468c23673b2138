// Pipeline channels: every generated schedule (training and forward-only) sends each channel's
// messages in the order its receiver posts them; a program that would not is refused naming the
// channel; tags are unique and give back their class; the split rounds keep every rank in at most
// one channel per round and cover each channel once.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "parallelism/pipeline_channels.h"
#include "tests/unit/error_text.h"

namespace tandem::parallel {
namespace {

using testing::error_of;

struct Request {
  ScheduleKind kind;
  int pp;
  int64_t microbatches;
};

std::vector<Request> requests() {
  std::vector<Request> out;
  for (ScheduleKind kind : {ScheduleKind::k1F1B, ScheduleKind::kZBH1, ScheduleKind::kDualPipe,
                            ScheduleKind::kDualPipeV})
    for (int pp = 2; pp <= 6; ++pp)
      for (int64_t m : {1, 2, 3, 4, 6, 8, 12, 13, 16}) {
        if (kind == ScheduleKind::kDualPipe && (pp % 2 || m % 2 || m < 2 * pp)) continue;
        if (kind == ScheduleKind::kDualPipeV && m < 2 * pp) continue;
        out.push_back({kind, pp, m});
      }
  return out;
}

TEST(PipelineChannels, EverySchedulesSendOrderIsItsReceiversOrder) {
  int checked = 0;
  for (const Request& r : requests()) {
    const Schedule schedule = make_schedule(r.kind, r.pp, r.microbatches);
    const PipelineLayout layout = schedule.layout();
    std::vector<PipelineChannel> channels;
    ASSERT_NO_THROW(channels = pipeline_channels(
                        layout, {schedule.ranks, forward_only(layout, r.microbatches)}))
        << choice_name(r.kind) << " pp " << r.pp << " m " << r.microbatches;
    // Every message is on a channel, and a channel carries only one class between two ranks.
    std::set<PipelineChannel> set(channels.begin(), channels.end());
    EXPECT_EQ(set.size(), channels.size());
    int64_t messages = 0;
    for (int rank = 0; rank < r.pp; ++rank) {
      std::vector<PipelineMessage> sends, receives;
      pipeline_messages(layout, rank, schedule.ranks[rank], sends, receives);
      messages += static_cast<int64_t>(sends.size());
      for (const PipelineMessage& m : sends)
        EXPECT_TRUE(set.count({rank, m.peer, pipeline_message_class(layout, m.tag)}));
    }
    // Each (direction, chunk boundary) carries every micro-batch once each way, less the
    // boundaries crossed on one rank (the turn of DualPipeV's V).
    const int64_t per_direction = r.microbatches / layout.n_directions();
    int64_t boundaries = 0;
    for (int d = 0; d < layout.n_directions(); ++d)
      for (int s = 0; s + 1 < layout.n_stages(); ++s)
        boundaries += layout.slot(d, s).rank != layout.slot(d, s + 1).rank;
    EXPECT_EQ(messages, 2 * boundaries * per_direction)
        << choice_name(r.kind) << " pp " << r.pp << " m " << r.microbatches;
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(PipelineChannels, AProgramReceivingOutOfOrderIsRefusedNamingTheChannel) {
  const Schedule schedule = make_schedule(ScheduleKind::k1F1B, 2, 2);
  auto ranks = schedule.ranks;
  // Rank 1 takes micro-batch 1 before 0; rank 0 still sends 0 first.
  ranks[1] = {
      {Op::kForward, 0, 1}, {Op::kBackward, 0, 1}, {Op::kForward, 0, 0}, {Op::kBackward, 0, 0}};
  const std::string error = error_of([&] { pipeline_channels(schedule.layout(), {ranks}); });
  EXPECT_NE(error.find("rank 0 → rank 1"), std::string::npos) << error;
  EXPECT_NE(error.find("by order"), std::string::npos) << error;
}

TEST(PipelineChannels, TagsAreUniqueAndGiveBackTheirClass) {
  for (ScheduleKind kind :
       {ScheduleKind::k1F1B, ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    const PipelineLayout layout(kind, 4);
    const int classes = pipeline_message_classes(layout);
    EXPECT_EQ(classes, 2 * layout.n_directions() * layout.n_stages());
    std::set<int> seen;
    for (int64_t mb = 0; mb < 9; ++mb)
      for (int k = 0; k < 2; ++k)
        for (int d = 0; d < layout.n_directions(); ++d)
          for (int s = 0; s < layout.n_stages(); ++s) {
            const int tag =
                pipeline_message_tag(layout, static_cast<PipelineMessageKind>(k), d, s, mb);
            EXPECT_TRUE(seen.insert(tag).second);
            EXPECT_LT(tag, classes * 9);
            EXPECT_EQ(pipeline_message_class(layout, tag),
                      pipeline_message_tag(layout, static_cast<PipelineMessageKind>(k), d, s, 0));
          }
  }
}

TEST(PipelineChannels, RoundsKeepEachRankInOneChannelAndCoverEveryChannelOnce) {
  for (const Request& r : requests()) {
    const Schedule schedule = make_schedule(r.kind, r.pp, r.microbatches);
    const auto channels = pipeline_channels(
        schedule.layout(), {schedule.ranks, forward_only(schedule.layout(), r.microbatches)});
    const auto rounds = channel_rounds(channels);
    std::multiset<PipelineChannel> covered;
    for (const auto& round : rounds) {
      std::set<int> ranks;
      for (const PipelineChannel& c : round) {
        EXPECT_TRUE(ranks.insert(c.from).second);
        EXPECT_TRUE(ranks.insert(c.to).second);
        covered.insert(c);
      }
    }
    EXPECT_EQ(covered, std::multiset<PipelineChannel>(channels.begin(), channels.end()));
    // A rank is in at most 2·(its channels) rounds' worth; greedy stays within twice the busiest.
    std::map<int, int> per_rank;
    for (const PipelineChannel& c : channels) ++per_rank[c.from], ++per_rank[c.to];
    int busiest = 0;
    for (const auto& [rank, n] : per_rank) busiest = std::max(busiest, n);
    EXPECT_LE(static_cast<int>(rounds.size()), 2 * busiest);
  }
}

}  // namespace
}  // namespace tandem::parallel
