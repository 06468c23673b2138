// Pipeline schedules: DualPipe's reference orders, DualPipeV's order worked out by hand, every
// generated schedule passing the checker, the checker catching broken ones, the simulated bubble
// and activation peak against the published formulas, request validation and the layout maps.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "parallelism/schedule.h"
#include "parallelism/schedule_simulator.h"
#include "parallelism/schedule_svg.h"
#include "runtime/core/config.h"
#include "tests/unit/error_text.h"

namespace tandem::parallel {
namespace {

using testing::error_of;

constexpr ScheduleKind kAllKinds[] = {ScheduleKind::k1F1B, ScheduleKind::kZBH1,
                                      ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string rank_line(const Schedule& schedule, int rank) {
  std::string line;
  for (const Instruction& in : schedule.ranks[rank]) {
    if (!line.empty()) line += ' ';
    line += in.to_string();
  }
  return line;
}

bool is_valid_request(ScheduleKind kind, int pp, int64_t microbatches) {
  try {
    validate_schedule_request(kind, pp, microbatches);
    return true;
  } catch (const Error&) {
    return false;
  }
}

ScheduleCosts costs(double f, double b, double w, double fb = 0) {
  ScheduleCosts c;
  c.f = f;
  c.b = b;
  c.w = w;
  c.fb = fb;
  return c;
}

std::string describe(const ScheduleCosts& c) {
  std::ostringstream out;
  out << "f=" << c.f << " b=" << c.b << " w=" << c.w << " fb=" << c.pair_cost();
  return out.str();
}

// (1) The orders of deepseek-ai/DualPipe for pp = 4 and 8 micro-batches.
TEST(Schedule, DualPipeMatchesTheReferenceOrders) {
  const std::string outer =
      "F0.0 F0.1 F0.2 F1.0 b1.0 W F1.1 F0.3&B1.1 F1.2&B0.0 B1.2 F1.3&B0.1 B1.3 b0.2 W b0.3 W";
  const std::string middle =
      "F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 F1.2&B0.0 F0.3&B1.1 F1.3&B0.1 B1.2 B0.2 b1.3 b0.3 W W";
  const Schedule schedule = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  ASSERT_EQ(schedule.ranks.size(), 4u);
  EXPECT_EQ(rank_line(schedule, 0), outer);
  EXPECT_EQ(rank_line(schedule, 1), middle);
  EXPECT_EQ(rank_line(schedule, 2), middle);
  EXPECT_EQ(rank_line(schedule, 3), outer);
  const std::vector<std::string> lines = lines_of(format_schedule(schedule));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "rank 0: " + outer);
  EXPECT_EQ(lines[1], "rank 1: " + middle);
  // Each W carries the weight gradient it runs: the oldest b still queued.
  const auto& rank1 = schedule.ranks[1];
  EXPECT_EQ(rank1[13], (Instruction{Op::kWeight, 1, 3, 0, 0}));
  EXPECT_EQ(rank1[14], (Instruction{Op::kWeight, 0, 3, 0, 0}));
  EXPECT_EQ(schedule.ranks[0][5], (Instruction{Op::kWeight, 1, 0, 0, 0}));
}

// (5) DualPipeV for pp = 2 and 5 micro-batches, written out by hand from the eight phases with
// n = 2, H = 5: rank 0 (h = 0) and rank 1 (h = 1, the turn of the V, so its first steady pair is
// run apart and its phase-6 switch to b comes before the chunk-1 backward of i = 1).
TEST(Schedule, DualPipeVMatchesTheHandWrittenOrder) {
  const Schedule schedule = make_schedule(ScheduleKind::kDualPipeV, 2, 5);
  EXPECT_EQ(rank_line(schedule, 0),
            "F0.0 F0.1 F0.2 F1.0 b1.0 W F1.1 F0.3&B1.1 F1.2&B0.0 F0.4&B1.2 F1.3&B0.1 B1.3 "
            "F1.4&B0.2 B1.4 b0.3 W b0.4 W");
  EXPECT_EQ(rank_line(schedule, 1),
            "F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 F1.2&B0.0 F0.3&B1.1 F1.3&B0.1 F0.4&B1.2 F1.4&B0.2 "
            "B1.3 B0.3 b1.4 b0.4 W W");
  EXPECT_NO_THROW(check_schedule(schedule));
}

// DualPipeV is DualPipe folded at the middle: n ranks with M micro-batches run the same lists as
// the first n ranks of DualPipe on 2n ranks with M per direction.
TEST(Schedule, DualPipeVIsDualPipeFolded) {
  for (int n : {1, 2, 3, 4}) {
    for (int64_t m : {2 * n, 2 * n + 1, 3 * n + 2, 20}) {
      const Schedule v = make_schedule(ScheduleKind::kDualPipeV, n, m);
      const Schedule d = make_schedule(ScheduleKind::kDualPipe, 2 * n, 2 * m);
      for (int r = 0; r < n; ++r) EXPECT_EQ(v.ranks[r], d.ranks[r]) << "n=" << n << " m=" << m;
      const SimulationResult sv = simulate(v, ScheduleCosts{});
      const SimulationResult sd = simulate(d, ScheduleCosts{});
      EXPECT_DOUBLE_EQ(sv.bubble, sd.bubble);
      EXPECT_DOUBLE_EQ(sv.makespan, sd.makespan);
    }
  }
}

TEST(Schedule, OneFOneBAndZbH1Orders) {
  const Schedule one = make_schedule(ScheduleKind::k1F1B, 3, 4);
  EXPECT_EQ(rank_line(one, 0), "F0.0 F0.1 F0.2 B0.0 F0.3 B0.1 B0.2 B0.3");
  EXPECT_EQ(rank_line(one, 2), "F0.0 B0.0 F0.1 B0.1 F0.2 B0.2 F0.3 B0.3");
  // ZB-H1: 1F1B's F/b order; rank r keeps r weight gradients postponed until its cool-down.
  const Schedule zb = make_schedule(ScheduleKind::kZBH1, 3, 4);
  EXPECT_EQ(rank_line(zb, 0), "F0.0 F0.1 F0.2 b0.0 W F0.3 b0.1 W b0.2 W b0.3 W");
  EXPECT_EQ(rank_line(zb, 1), "F0.0 F0.1 b0.0 F0.2 b0.1 W F0.3 b0.2 W b0.3 W W");
  EXPECT_EQ(rank_line(zb, 2), "F0.0 b0.0 F0.1 b0.1 F0.2 b0.2 W F0.3 b0.3 W W W");
}

// (2) Every schedule the generators make is runnable, and so is every forward-only order.
TEST(Schedule, EveryGeneratedScheduleChecks) {
  int checked = 0;
  for (ScheduleKind kind : kAllKinds) {
    for (int pp : {1, 2, 3, 4, 6, 8}) {
      for (int64_t m : {1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 24, 33}) {
        if (!is_valid_request(kind, pp, m)) continue;
        SCOPED_TRACE(::testing::Message()
                     << choice_name(kind) << " pp=" << pp << " microbatches=" << m);
        const Schedule schedule = make_schedule(kind, pp, m);
        EXPECT_NO_THROW(check_schedule(schedule));
        // Every rank runs 2 instructions' worth (F and B, or F and b + W) per chunk and
        // micro-batch, counting an F&B pair as both.
        for (const auto& list : schedule.ranks) {
          int64_t forwards = 0, backwards = 0;
          for (const Instruction& in : list) {
            forwards += in.op == Op::kForward || in.op == Op::kForwardBackward;
            backwards += in.op != Op::kForward && in.op != Op::kWeight;
          }
          EXPECT_EQ(forwards,
                    m * schedule.layout().chunks_per_rank() / schedule.layout().n_directions());
          EXPECT_EQ(backwards, forwards);
        }
        EXPECT_NO_THROW(
            check_forward_only(schedule.layout(), forward_only(schedule.layout(), m), m));
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 150);
}

TEST(Schedule, ForwardOnlyRunsDirectionZeroInStageOrder) {
  const auto dual = forward_only(PipelineLayout(ScheduleKind::kDualPipe, 4), 3);
  // Ranks 0, 1 hold direction 0 as chunk 0; ranks 2, 3 as chunk 1. All micro-batches go down.
  EXPECT_EQ(dual[0].size(), 3u);
  EXPECT_EQ(dual[3][2], (Instruction{Op::kForward, 1, 2, 0, 0}));
  const auto v = forward_only(PipelineLayout(ScheduleKind::kDualPipeV, 2), 2);
  ASSERT_EQ(v[1].size(), 4u);
  EXPECT_EQ(v[1][0].chunk, 0);  // stage 1 before stage 2
  EXPECT_EQ(v[1][1].chunk, 1);
  EXPECT_NO_THROW(check_forward_only(PipelineLayout(ScheduleKind::kDualPipeV, 2), v, 2));
}

// (3) The checker names the rank (and instruction) of a broken schedule.
TEST(Schedule, CheckerRejectsAMissingBackward) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 4, 6);
  auto& list = s.ranks[2];
  list.erase(std::find(list.begin(), list.end(), Instruction{Op::kBackward, 0, 3, 0, 0}));
  const std::string e = error_of([&] { check_schedule(s); });
  EXPECT_NE(e.find("rank 2 never runs the backward (B or b) of chunk 0 micro-batch 3"),
            std::string::npos)
      << e;
}

TEST(Schedule, CheckerRejectsAWeightBeforeItsInputGradient) {
  Schedule s = make_schedule(ScheduleKind::kZBH1, 3, 4);
  // Rank 1: "F0.0 F0.1 b0.0 F0.2 b0.1 W ..." → move that W before b0.0.
  auto& list = s.ranks[1];
  ASSERT_EQ(list[5].op, Op::kWeight);
  const Instruction weight = list[5];
  list.erase(list.begin() + 5);
  list.insert(list.begin() + 2, weight);
  const std::string e = error_of([&] { check_schedule(s); });
  EXPECT_NE(e.find("rank 1 instruction 2 (W): W with no queued weight gradient"), std::string::npos)
      << e;

  // A W naming a different weight gradient than the oldest queued one.
  Schedule t = make_schedule(ScheduleKind::kZBH1, 3, 4);
  t.ranks[0][4].mb = 1;
  const std::string e2 = error_of([&] { check_schedule(t); });
  EXPECT_NE(e2.find("rank 0 instruction 4 (W): W names chunk 0 micro-batch 1 but the oldest"),
            std::string::npos)
      << e2;

  // Every b needs its W.
  Schedule u = make_schedule(ScheduleKind::kZBH1, 2, 2);
  u.ranks[1].pop_back();
  EXPECT_NE(error_of([&] { check_schedule(u); }).find("rank 1 leaves 1 weight gradient(s)"),
            std::string::npos);
}

TEST(Schedule, CheckerRejectsADeadlock) {
  // Rank 0 waits for rank 1's B0.0, which rank 1 runs only after F0.1, which needs rank 0's F0.1.
  Schedule s;
  s.kind = ScheduleKind::k1F1B;
  s.pp = 2;
  s.microbatches = 2;
  auto f = [](int64_t mb) { return Instruction{Op::kForward, 0, mb, 0, 0}; };
  auto b = [](int64_t mb) { return Instruction{Op::kBackward, 0, mb, 0, 0}; };
  s.ranks = {{f(0), b(0), f(1), b(1)}, {f(0), f(1), b(0), b(1)}};
  const std::string e = error_of([&] { check_schedule(s); });
  EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
  EXPECT_NE(e.find("rank 0 is stuck at instruction 1 (B0.0) waiting for the backward of "
                   "direction 0 stage 1 micro-batch 0 (rank 1 chunk 0)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("rank 1 is stuck at instruction 1 (F0.1) waiting for F of direction 0 stage "
                   "0 micro-batch 1 (rank 0 chunk 0)"),
            std::string::npos)
      << e;
}

TEST(Schedule, CheckerRejectsOtherMistakes) {
  Schedule s = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  s.ranks[3].push_back(Instruction{Op::kForward, 0, 0, 0, 0});
  EXPECT_NE(
      error_of([&] { check_schedule(s); }).find("rank 3 instruction 16 (F0.0): second forward"),
      std::string::npos);
  Schedule t = make_schedule(ScheduleKind::k1F1B, 2, 2);
  t.ranks[0][0].mb = 5;
  EXPECT_NE(error_of([&] { check_schedule(t); }).find("micro-batch 5 out of range"),
            std::string::npos);
  // The backward half of an F&B pair cannot use the pair's own forward.
  Schedule u = make_schedule(ScheduleKind::k1F1B, 1, 1);
  u.ranks[0] = {Instruction{Op::kForwardBackward, 0, 0, 0, 0}};
  EXPECT_NE(error_of([&] { check_schedule(u); }).find("backward before the forward"),
            std::string::npos);
  Schedule v = make_schedule(ScheduleKind::k1F1B, 3, 3);
  v.ranks.pop_back();
  EXPECT_NE(error_of([&] { check_schedule(v); }).find("2 rank lists for pp = 3"),
            std::string::npos);
}

// (4) The simulated bubble (the idle time of the least busy rank, comm = 0) against the formulas
// published with DualPipe. Conditions under which they are exact, found with the simulator:
//  - 1F1B (PP−1)(F+B): any costs and any number of micro-batches.
//  - ZB-H1 (PP−1)(F+B−2W): M ≥ PP, W ≤ F and 2W ≤ B (the split-off input gradient b = B − W is
//    at least W). With W > F rank 0's unavoidable wait for the first b, (PP−1)(B−W), exceeds
//    the formula; with B − W < W the last rank's own (PP−1)·F start-up does.
//  - DualPipe (PP/2−1)(F&B+B−3W) and DualPipeV (as DualPipe with PP = 2·ranks): F = B − W (a
//    forward costs as much as an input-gradient backward, the paper's setting) and F&B ≥ B (an
//    overlapped pair takes at least as long as its backward alone); any valid M (≥ 2·PP).
//    Outside these the formula is an estimate and the simulated bubble is the real figure.
TEST(ScheduleSimulator, OneFOneBBubbleMatchesTheFormula) {
  for (int pp : {1, 2, 3, 4, 6, 8}) {
    for (int64_t m : {1, 3, 4, 8, 13, 32}) {
      for (const ScheduleCosts& c :
           {costs(1, 2, 1), costs(1, 1, 0), costs(2, 3, 1), costs(0.5, 4, 1.5), costs(3, 1, 0.5)}) {
        const SimulationResult r = simulate(make_schedule(ScheduleKind::k1F1B, pp, m), c);
        EXPECT_DOUBLE_EQ(r.bubble, (pp - 1) * (c.f + c.b))
            << "pp=" << pp << " m=" << m << " " << describe(c);
        EXPECT_DOUBLE_EQ(r.makespan, m * (c.f + c.b) + r.bubble);
        EXPECT_EQ(r.max_peak_activations, std::min<int64_t>(pp, m));
      }
    }
  }
}

TEST(ScheduleSimulator, ZbH1BubbleMatchesTheFormula) {
  for (int pp : {1, 2, 3, 4, 6, 8}) {
    for (int64_t m : {int64_t{pp}, int64_t{pp} + 1, 2 * int64_t{pp}, int64_t{24}}) {
      const Schedule schedule = make_schedule(ScheduleKind::kZBH1, pp, m);
      const SimulationResult one_f_one_b =
          simulate(make_schedule(ScheduleKind::k1F1B, pp, m), ScheduleCosts{});
      for (const ScheduleCosts& c : {costs(1, 2, 1), costs(1.5, 2, 0.5), costs(2, 3, 1),
                                     costs(1, 4, 1), costs(1, 1, 0.5), costs(3, 4, 2)}) {
        const SimulationResult r = simulate(schedule, c);
        EXPECT_DOUBLE_EQ(r.bubble, (pp - 1) * (c.f + c.b - 2 * c.w))
            << "pp=" << pp << " m=" << m << " " << describe(c);
        EXPECT_DOUBLE_EQ(r.bubble, published_bubble(ScheduleKind::kZBH1, pp, c));
        // The same activation memory as 1F1B, rank by rank.
        EXPECT_EQ(r.peak_activations, one_f_one_b.peak_activations);
      }
    }
  }
}

TEST(ScheduleSimulator, DualPipeBubbleAndActivationsMatchTheFormula) {
  // F = B − W throughout; F&B from B (the most overlap possible) to F + B (none).
  const ScheduleCosts cost_sets[] = {
      costs(1, 2, 1),     costs(1, 2, 1, 2),   costs(1, 2, 1, 2.5),   costs(1.5, 2, 0.5, 2),
      costs(1.5, 2, 0.5), costs(2, 3, 1, 4.5), costs(1.5, 3, 1.5, 3), costs(1, 1.5, 0.5, 2)};
  for (int pp : {2, 4, 6, 8}) {
    for (int64_t m : {2 * int64_t{pp}, 2 * int64_t{pp} + 2, int64_t{40}}) {
      const Schedule schedule = make_schedule(ScheduleKind::kDualPipe, pp, m);
      for (const ScheduleCosts& c : cost_sets) {
        const SimulationResult r = simulate(schedule, c);
        EXPECT_DOUBLE_EQ(r.bubble, (pp / 2 - 1) * (c.pair_cost() + c.b - 3 * c.w))
            << "pp=" << pp << " m=" << m << " " << describe(c);
        EXPECT_EQ(r.max_peak_activations, pp + 1);
        for (int64_t peak : r.peak_activations) EXPECT_EQ(peak, pp + 1);
      }
    }
  }
}

TEST(ScheduleSimulator, DualPipeVBubbleMatchesDualPipeWithTwiceTheRanks) {
  const ScheduleCosts cost_sets[] = {costs(1, 2, 1), costs(1, 2, 1, 2.5), costs(2, 3, 1, 4),
                                     costs(1.5, 2, 0.5, 2)};
  for (int n : {1, 2, 3, 4, 6, 8}) {
    for (int64_t m : {2 * int64_t{n}, 2 * int64_t{n} + 1, int64_t{30}}) {
      const Schedule schedule = make_schedule(ScheduleKind::kDualPipeV, n, m);
      for (const ScheduleCosts& c : cost_sets) {
        const SimulationResult r = simulate(schedule, c);
        EXPECT_DOUBLE_EQ(r.bubble, published_bubble(ScheduleKind::kDualPipe, 2 * n, c))
            << "n=" << n << " m=" << m << " " << describe(c);
        EXPECT_DOUBLE_EQ(r.bubble, (n - 1) * (c.pair_cost() + c.b - 3 * c.w));
        EXPECT_EQ(r.max_peak_activations, 2 * n + 1);
      }
    }
  }
}

TEST(ScheduleSimulator, CommunicationDelaysOnlyCrossRankMessages) {
  ScheduleCosts slow = costs(1, 2, 1);
  slow.comm = 100;
  // One DualPipeV rank: the turn of the V is a hand-off on the same rank, so no message at all.
  const Schedule single = make_schedule(ScheduleKind::kDualPipeV, 1, 4);
  EXPECT_DOUBLE_EQ(simulate(single, slow).makespan, simulate(single, costs(1, 2, 1)).makespan);
  // Across ranks a message costs comm: 1F1B on 2 ranks, 1 micro-batch: F, comm, F, B, comm, B.
  ScheduleCosts some = costs(1, 2, 1);
  some.comm = 0.25;
  const SimulationResult r = simulate(make_schedule(ScheduleKind::k1F1B, 2, 1), some);
  EXPECT_DOUBLE_EQ(r.makespan, 1 + 0.25 + 1 + 2 + 0.25 + 2);
  const SimulationResult d0 = simulate(make_schedule(ScheduleKind::kDualPipe, 4, 8), {});
  const SimulationResult d1 = simulate(make_schedule(ScheduleKind::kDualPipe, 4, 8), some);
  EXPECT_GT(d1.makespan, d0.makespan);
}

TEST(ScheduleSimulator, TimelineIsConsistent) {
  const Schedule schedule = make_schedule(ScheduleKind::kDualPipe, 4, 10);
  const ScheduleCosts c = costs(1, 2, 1, 2.5);
  const SimulationResult r = simulate(schedule, c);
  size_t total = 0;
  for (const auto& list : schedule.ranks) total += list.size();
  ASSERT_EQ(r.timeline.size(), total);
  std::vector<double> last_end(schedule.pp, 0);
  for (const TimedInstruction& t : r.timeline) {
    EXPECT_GE(t.start, last_end[t.rank]);  // a rank runs one instruction at a time, in order
    EXPECT_GT(t.end, t.start);
    last_end[t.rank] = t.end;
  }
  for (int rank = 0; rank < schedule.pp; ++rank) {
    EXPECT_DOUBLE_EQ(r.finish[rank], last_end[rank]);
    EXPECT_LE(r.busy[rank], r.makespan);
  }
  EXPECT_DOUBLE_EQ(r.bubble_fraction, r.bubble / r.makespan);
  EXPECT_NE(error_of([&] { simulate(schedule, costs(1, 1, 2)); }).find("cannot exceed"),
            std::string::npos);
}

TEST(ScheduleSvg, DrawsEveryInstructionWithSplitPairs) {
  const Schedule schedule = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  const SimulationResult r = simulate(schedule, costs(1, 2, 1, 2.5));
  const std::string svg = schedule_svg(schedule, r);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  size_t rects = 0, pairs = 0;
  for (size_t at = svg.find("<rect"); at != std::string::npos; at = svg.find("<rect", at + 1)) {
    ++rects;
  }
  for (const auto& list : schedule.ranks) {
    for (const Instruction& in : list) pairs += in.op == Op::kForwardBackward;
  }
  // Background, 7 legend swatches, one box per instruction and a second half per pair.
  EXPECT_EQ(rects, 1 + 7 + r.timeline.size() + pairs);
  EXPECT_NE(svg.find("rank 3"), std::string::npos);
  EXPECT_NE(svg.find("F0.3&amp;B1.1"), std::string::npos);  // a pair's tooltip, escaped
}

// (6) Impossible requests are refused with the numbers in the message.
TEST(Schedule, ValidationNamesTheNumbers) {
  EXPECT_NE(error_of([] {
              validate_schedule_request(ScheduleKind::kDualPipe, 3, 12);
            }).find("even pipeline size, got pp = 3"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_schedule_request(ScheduleKind::kDualPipe, 4, 9);
            }).find("must be even, got 9"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_schedule_request(ScheduleKind::kDualPipe, 8, 10);
            }).find("needs at least 2*pp = 16 micro-batches for pp = 8, got 10"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_schedule_request(ScheduleKind::kDualPipeV, 3, 5);
            }).find("needs at least 2*pp = 6 micro-batches for pp = 3, got 5"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_schedule_request(ScheduleKind::k1F1B, 2, 0);
            }).find("at least 1 micro-batch, got 0"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { validate_schedule_request(ScheduleKind::kZBH1, 0, 4); }).find("got pp = 0"),
      std::string::npos);
  EXPECT_NE(error_of([] { make_schedule(ScheduleKind::kDualPipeV, 4, 7); }).find("got 7"),
            std::string::npos);
  EXPECT_NO_THROW(validate_schedule_request(ScheduleKind::kDualPipeV, 3, 7));
  EXPECT_NO_THROW(validate_schedule_request(ScheduleKind::kDualPipe, 2, 4));
}

TEST(Schedule, KindNamesAndInstructionText) {
  for (ScheduleKind kind : kAllKinds) {
    EXPECT_EQ(parse_choice<ScheduleKind>(choice_name(kind), "schedule"), kind);
  }
  // One parser, case-insensitive, for the config and the CLI alike; the nearest name suggested.
  EXPECT_EQ(parse_choice<ScheduleKind>("DualPipeV", "schedule"), ScheduleKind::kDualPipeV);
  EXPECT_EQ(parse_choice<ScheduleKind>("ZB-H1", "schedule"), ScheduleKind::kZBH1);
  EXPECT_EQ(error_of([] { parse_choice<ScheduleKind>("gpipe", "parallel.schedule"); }),
            "parallel.schedule = \"gpipe\" is not one of \"1f1b\", \"zb-h1\", \"dualpipe\", "
            "\"dualpipev\"");
  EXPECT_EQ(error_of([] { parse_choice<ScheduleKind>("dualpip", "parallel.schedule"); }),
            "parallel.schedule = \"dualpip\" is not one of \"1f1b\", \"zb-h1\", \"dualpipe\", "
            "\"dualpipev\"; did you mean \"dualpipe\"?");
  Config config;
  apply_override(config, "parallel.schedule=DualPipe");
  EXPECT_EQ(config.parallel.schedule, ScheduleKind::kDualPipe);
  EXPECT_EQ((Instruction{Op::kForward, 0, 3, 0, 0}).to_string(), "F0.3");
  EXPECT_EQ((Instruction{Op::kBackward, 1, 2, 0, 0}).to_string(), "B1.2");
  EXPECT_EQ((Instruction{Op::kBackwardInput, 0, 1, 0, 0}).to_string(), "b0.1");
  EXPECT_EQ((Instruction{Op::kWeight, 1, 7, 0, 0}).to_string(), "W");
  EXPECT_EQ((Instruction{Op::kForwardBackward, 0, 3, 1, 1}).to_string(), "F0.3&B1.1");
}

// (7) slot, stage_of and direction_of are inverse to each other.
TEST(PipelineLayout, SlotStageAndDirectionAreInverse) {
  for (ScheduleKind kind : kAllKinds) {
    for (int pp : {1, 2, 3, 4, 6, 8}) {
      if (kind == ScheduleKind::kDualPipe && pp % 2 != 0) continue;
      const PipelineLayout layout(kind, pp);
      SCOPED_TRACE(::testing::Message() << choice_name(kind) << " pp=" << pp);
      EXPECT_EQ(layout.n_stages() * layout.n_directions(), pp * layout.chunks_per_rank());
      for (int r = 0; r < pp; ++r) {
        for (int c = 0; c < layout.chunks_per_rank(); ++c) {
          EXPECT_EQ(layout.slot(layout.direction_of(r, c), layout.stage_of(r, c)),
                    (StageSlot{r, c}));
        }
      }
      for (int d = 0; d < layout.n_directions(); ++d) {
        for (int s = 0; s < layout.n_stages(); ++s) {
          const StageSlot slot = layout.slot(d, s);
          EXPECT_EQ(layout.stage_of(slot.rank, slot.chunk), s);
          EXPECT_EQ(layout.direction_of(slot.rank, slot.chunk), d);
        }
      }
    }
  }
  // The documented shapes.
  const PipelineLayout dual(ScheduleKind::kDualPipe, 8);
  EXPECT_EQ(dual.slot(0, 0), (StageSlot{0, 0}));
  EXPECT_EQ(dual.slot(1, 0), (StageSlot{7, 0}));
  EXPECT_EQ(dual.slot(1, 7), (StageSlot{0, 1}));
  EXPECT_EQ(dual.stage_of(5, 0), 2);  // second half: chunk 0 runs upwards, stage pp−1−r
  EXPECT_EQ(dual.direction_of(5, 0), 1);
  const PipelineLayout v(ScheduleKind::kDualPipeV, 4);
  EXPECT_EQ(v.slot(0, 3), (StageSlot{3, 0}));
  EXPECT_EQ(v.slot(0, 4), (StageSlot{3, 1}));  // the turn of the V stays on the last rank
  EXPECT_EQ(v.slot(0, 7), (StageSlot{0, 1}));
  EXPECT_EQ(dual.global_microbatch(1, 3, 20), 13);
  EXPECT_EQ(v.global_microbatch(0, 3, 20), 3);
}

}  // namespace
}  // namespace tandem::parallel
