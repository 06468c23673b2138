// The communication layer's local rules, without peers: handles never swallow an error or wait
// silently, the flight recorder's text reads back, the message tag's fields never overlap, and two
// ranks on one GPU are found.
#include <gtest/gtest.h>

#include <set>

#include "comm/communicator.h"
#include "comm/flight_recorder.h"
#include "comm/p2p_collectives.h"
#include "comm/topology.h"
#include "tests/unit/error_text.h"

namespace tandem::comm {
namespace {

using testing::error_of;

// An operation that completes when told to, or fails when told to.
struct Script {
  bool done = false;
  bool fail = false;
  int waits = 0;
};

class ScriptedWork final : public Work {
 public:
  explicit ScriptedWork(Script& script) : script_(script) {}
  bool test() override {
    if (script_.fail) throw CommTimeout("all_reduce #7 on group 'world' timed out");
    return script_.done;
  }
  void wait() override {
    ++script_.waits;
    if (script_.fail) throw CommTimeout("all_reduce #7 on group 'world' timed out");
    script_.done = true;
  }
  std::string describe() const override { return "all_reduce #7 on group 'world' (64 bytes)"; }

 private:
  Script& script_;
};

CommHandle started(Script& script) {
  return CommHandle(std::make_unique<ScriptedWork>(script));
}

TEST(CommHandle, AFailureReachesTheWaiterOnceAndLeavesTheHandleEmpty) {
  Script script;
  script.fail = true;
  CommHandle handle = started(script);
  EXPECT_THROW(handle.wait(), CommTimeout);
  EXPECT_FALSE(handle.pending());
  handle.wait();  // nothing left: the error was delivered
  Script polled;
  polled.fail = true;
  CommHandle other = started(polled);
  EXPECT_THROW(other.test(), CommTimeout);
  EXPECT_FALSE(other.pending());
}

TEST(CommHandle, AssigningOverAnUnfinishedHandleIsAnErrorNamingTheOp) {
  Script first, second;
  CommHandle handle = started(first);
  const std::string e = error_of([&] { handle = started(second); });
  EXPECT_NE(e.find("assigning over the unfinished all_reduce #7 on group 'world' (64 bytes)"),
            std::string::npos)
      << e;
  EXPECT_EQ(first.waits, 0) << "it must not wait silently";
  // A finished operation may be replaced; a failed one hands its failure to the assigner.
  first.done = true;
  handle = started(second);
  second.fail = true;
  Script third;
  EXPECT_THROW(handle = started(third), CommTimeout);
  second.fail = false;
  second.done = true;
}

TEST(CommHandleDeathTest, DestroyingAnUnfinishedHandleIsFatalAndNamesTheOp) {
  EXPECT_DEATH(
      {
        Script script;
        CommHandle handle = started(script);
      },
      "destroyed the handle of the unfinished all_reduce #7 on group 'world'");
  EXPECT_DEATH(
      {
        Script script;
        script.fail = true;
        CommHandle handle = started(script);
      },
      "without waiting on it, and the operation failed: all_reduce #7 on group 'world' timed out");
}

TEST(CommHandle, UnwindingAbandonsInsteadOfWaiting) {
  Script script;
  try {
    CommHandle handle = started(script);
    throw Error("something else failed");
  } catch (const Error&) {
  }
  EXPECT_EQ(script.waits, 0);
}

TEST(FlightRecorder, RecordsGroupsAndPendingOpsAndReadsBack) {
  FlightRecorder recorder(3, 4);
  auto members = std::make_shared<const std::vector<int>>(std::vector<int>{0, 3});
  OpRecord a{"all_reduce", "world", 1, 4096, members};
  OpRecord b{"barrier", "world", 2, 0, members};
  OpRecord c{"all_to_all_v", "world/split1(0)", 1, 100, members};
  recorder.enter(a);
  recorder.complete(a);
  recorder.enter(b);
  recorder.enter(c);
  recorder.complete(c);
  for (int i = 0; i < 6; ++i) {  // more than the ring holds: the groups' progress stays
    OpRecord send{"send", "world/split2(1)", 0, 8, members};
    recorder.enter(send);
    recorder.complete(send);
  }
  EXPECT_EQ(recorder.entered_total(), 9u);
  const std::string text = recorder.serialize();
  const PeerRecord peer = FlightRecorder::parse(text);
  EXPECT_EQ(peer.rank, 3);
  ASSERT_EQ(peer.groups.count("world"), 1u) << text;
  EXPECT_EQ(peer.groups.at("world").entered_seq, 2u);
  EXPECT_EQ(peer.groups.at("world").entered_op, "barrier");
  EXPECT_EQ(peer.groups.at("world").completed_seq, 1u);
  EXPECT_EQ(peer.groups.at("world/split1(0)").completed_seq, 1u);
  // The barrier is no longer in the ring of 4, so nothing pending is listed from it...
  EXPECT_EQ(peer.oldest_pending, "") << text;
  FlightRecorder fresh(1, 8);
  OpRecord pending{"all_gather", "world", 5, 512, members};
  fresh.enter(pending);
  // ...but a pending op still in the ring is reported with its group, number and size.
  EXPECT_EQ(
      FlightRecorder::parse(fresh.serialize())
          .oldest_pending.rfind("all_gather #5 on group 'world' (512 bytes), pending for ", 0),
      0u);
}

TEST(TagLayout, FieldsNeverOverlap) {
  // Every field at its extreme, one at a time: each must land in bits no other field uses.
  using C = TagLayout::Collective;
  const uint64_t kind = TagLayout::collective(0, C::kAllReduce, 0, 0, 0);
  auto only = [&](uint64_t tag) { return tag & ~kind; };
  const uint64_t group =
      only(TagLayout::collective(TagLayout::kMaxGroupId, C::kAllReduce, 0, 0, 0));
  const uint64_t seq =
      only(TagLayout::collective(0, C::kAllReduce, TagLayout::kSequenceModulus - 1, 0, 0));
  const uint64_t which = only(TagLayout::collective(0, static_cast<C>(7), 0, 0, 0));
  const uint64_t part =
      only(TagLayout::collective(0, C::kAllReduce, 0, TagLayout::kMaxParts - 1, 0));
  const uint64_t source =
      only(TagLayout::collective(0, C::kAllReduce, 0, 0, TagLayout::kMaxGroupSize - 1));
  const uint64_t user = TagLayout::user(0, TagLayout::kMaxUserTag, 0);
  const uint64_t group_bits = group;
  EXPECT_NE(TagLayout::collective(1, C::kAllReduce, 3, 0, 0),
            TagLayout::collective(1, C::kBarrier, 3, 0, 0));
  const uint64_t fields[] = {group_bits, seq, which, part, source, kind};
  for (size_t i = 0; i < std::size(fields); ++i)
    for (size_t j = i + 1; j < std::size(fields); ++j)
      EXPECT_EQ(fields[i] & fields[j], 0u) << std::hex << fields[i] << " " << fields[j];
  EXPECT_EQ(group_bits | seq | which | part | source | kind, ~uint64_t{0});
  EXPECT_EQ(user & (group_bits | kind | source), 0u);
  // A sequence number wraps instead of spilling into the group.
  EXPECT_EQ(TagLayout::collective(5, C::kAllGather, TagLayout::kSequenceModulus + 3, 0, 0),
            TagLayout::collective(5, C::kAllGather, 3, 0, 0));
  EXPECT_NE(error_of([] {
              TagLayout::collective(1, C::kAllGather, 1, TagLayout::kMaxParts, 0);
            }).find("part"),
            std::string::npos);
}

// A GPU is its identity (UUID hash), whatever index each rank's CUDA_VISIBLE_DEVICES gave it and
// whichever node number the topology gave the rank.
TEST(Topology, RanksSharingAGpuAreTheFirstRepeatedIdentity) {
  EXPECT_FALSE(ranks_sharing_a_gpu({}));
  EXPECT_FALSE(ranks_sharing_a_gpu({11, 12, 13, 14}));
  const auto shared = ranks_sharing_a_gpu({11, 12, 13, 12, 11});
  ASSERT_TRUE(shared);
  EXPECT_EQ(*shared, std::pair(1, 3));  // the first repeat in rank order
}

}  // namespace
}  // namespace tandem::comm
