// Pipeline schedules: the layouts (which rank runs which stage), the generators for 1F1B, ZB-H1,
// DualPipe and DualPipeV, the forward-only order, and the checker that proves a schedule runnable
// by replaying its cross-rank dependencies.
#include "parallelism/schedule.h"

#include <algorithm>
#include <cctype>
#include <deque>
#include <sstream>
#include <tuple>
#include <utility>

#include "runtime/core/errors.h"

namespace tandem::parallel {

namespace {

// Builds one rank's list while keeping each chunk's forward and backward counters, so generators
// only say "forward of chunk c next" and the micro-batch numbers follow.
class RankListBuilder {
 public:
  void forward(int chunk) { list_.push_back(next_forward(chunk)); }
  void backward(int chunk, bool split_weight) {
    Instruction in;
    in.op = split_weight ? Op::kBackwardInput : Op::kBackward;
    in.chunk = chunk;
    in.mb = next_backward_[chunk]++;
    if (split_weight) pending_weights_.emplace_back(in.chunk, in.mb);
    list_.push_back(in);
  }
  void weight() {
    TANDEM_CHECK(!pending_weights_.empty(), "W with no queued weight gradient");
    Instruction in;
    in.op = Op::kWeight;
    std::tie(in.chunk, in.mb) = pending_weights_.front();
    pending_weights_.pop_front();
    list_.push_back(in);
  }
  // Forward of `forward_chunk` overlapped with the full backward of `backward_chunk`.
  void forward_backward(int forward_chunk, int backward_chunk) {
    Instruction in = next_forward(forward_chunk);
    in.op = Op::kForwardBackward;
    in.chunk_b = backward_chunk;
    in.mb_b = next_backward_[backward_chunk]++;
    list_.push_back(in);
  }
  size_t pending_weights() const { return pending_weights_.size(); }
  std::vector<Instruction> take() { return std::move(list_); }

 private:
  Instruction next_forward(int chunk) {
    Instruction in;
    in.op = Op::kForward;
    in.chunk = chunk;
    in.mb = next_forward_[chunk]++;
    return in;
  }

  std::vector<Instruction> list_;
  int64_t next_forward_[2] = {0, 0};
  int64_t next_backward_[2] = {0, 0};
  std::deque<std::pair<int, int64_t>> pending_weights_;
};

std::vector<Instruction> one_f_one_b_rank(int pp, int rank, int64_t microbatches) {
  RankListBuilder list;
  // Warm-up: the forwards still in flight towards the later stages before the first backward
  // can come back.
  const int64_t warmup = std::min<int64_t>(pp - 1 - rank, microbatches);
  for (int64_t i = 0; i < warmup; ++i) list.forward(0);
  for (int64_t i = warmup; i < microbatches; ++i) {
    list.forward(0);
    list.backward(0, /*split_weight=*/false);
  }
  for (int64_t i = 0; i < warmup; ++i) list.backward(0, false);
  return list.take();
}

// ZB-H1: 1F1B's order of forwards and input-gradient backwards b (so the same activation peak),
// with every weight gradient split off as a W and postponed. Rank r keeps r weight gradients
// queued: after each b it runs a W only when more than r wait, and after its last b it drains
// the rest. So rank 0 runs "F b W" like a split 1F1B, and the last rank "F b F b ..." with pp−1
// W's held back. Why: with comm 0 the makespan is the chain "last rank's final b → the final b
// of every earlier rank, (pp−1)(B−W) → rank 0's trailing W". The last rank, busy from (pp−1)·F
// on, reaches its final b with pp W's still to run instead of 1, so that b (and the whole chain)
// ends (pp−1)·W earlier than with W's run at once, while the W's postponed on the middle ranks
// fill the gaps of their cool-down. The simulator confirms bubble (pp−1)(F+B−2W) for M ≥ pp,
// W ≤ F and 2W ≤ B (tests/unit/test_schedule.cc).
std::vector<Instruction> zb_h1_rank(int pp, int rank, int64_t microbatches) {
  RankListBuilder list;
  const int64_t warmup = std::min<int64_t>(pp - 1 - rank, microbatches);
  const size_t kept = static_cast<size_t>(rank);
  for (int64_t i = 0; i < warmup; ++i) list.forward(0);
  for (int64_t i = warmup; i < microbatches; ++i) {
    list.forward(0);
    list.backward(0, /*split_weight=*/true);
    if (list.pending_weights() > kept) list.weight();
  }
  for (int64_t i = 0; i < warmup; ++i) {
    list.backward(0, true);
    if (list.pending_weights() > kept) list.weight();
  }
  while (list.pending_weights() > 0) list.weight();
  return list.take();
}

// The eight phases of DeepSeek's DualPipe for one rank, shared by DualPipeV. `n` is the number of
// ranks on one side of the turn (pp/2 for DualPipe, pp for DualPipeV), `half_rank` this rank's
// distance from its end of the pipeline, `per_direction` the micro-batches each chunk runs, and
// `middle` marks the rank where the two directions meet.
std::vector<Instruction> dualpipe_rank(int n, int half_rank, int64_t per_direction, bool middle) {
  RankListBuilder list;
  const int h = half_rank;
  const int outer = n - h - 1;  // ranks between this one and the far end of its side
  // 1. Forwards of chunk 0 that must be in flight before chunk 1's first input arrives.
  for (int i = 0; i < 2 * outer; ++i) list.forward(0);
  // 2. Alternate the two directions until chunk 1 is primed.
  for (int i = 0; i <= h; ++i) {
    list.forward(0);
    list.forward(1);
  }
  // 3. Start chunk 1's backwards with the weight gradient split off, to run a chunk-1 forward
  // sooner.
  for (int i = 0; i < outer; ++i) {
    list.backward(1, /*split_weight=*/true);
    list.weight();
    list.forward(1);
  }
  // 4. The steady state: every forward overlapped with a backward of the other direction. At
  // the middle the first pair is run apart, which lets its backward leave earlier.
  const int64_t steady = per_direction - 2 * n + h + 1;
  for (int64_t i = 0; i < steady; ++i) {
    if (i == 0 && middle) {
      list.forward(0);
      list.backward(1, false);
    } else {
      list.forward_backward(0, 1);
    }
    list.forward_backward(1, 0);
  }
  // 5. Chunk 0's forwards are done; chunk 1 still has some.
  for (int i = 0; i < outer; ++i) {
    list.backward(1, false);
    list.forward_backward(1, 0);
  }
  // 6. Backwards only; from the middle of this phase on, weight gradients are postponed to
  // fill the cool-down (the switch point depends on the parity of the half rank).
  bool split_weight = false;
  for (int i = 0; i <= h; ++i) {
    if (i == (h + 1) / 2 && h % 2 == 1) split_weight = true;
    list.backward(1, split_weight);
    if (i == (h + 1) / 2 && h % 2 == 0) split_weight = true;
    list.backward(0, split_weight);
  }
  // 7. Drain a weight gradient while waiting for each remaining chunk-0 backward.
  for (int i = 0; i < outer; ++i) {
    list.weight();
    list.backward(0, true);
  }
  // 8. The rest of the weight gradients.
  for (int i = 0; i <= h; ++i) list.weight();
  TANDEM_CHECK(list.pending_weights() == 0, "DualPipe phases left weight gradients queued");
  return list.take();
}

// Where (direction, stage) data lives while a schedule is replayed.
struct WorkIndex {
  int n_stages;
  int64_t per_direction;
  size_t operator()(int direction, int stage, int64_t mb) const {
    return (static_cast<size_t>(direction) * n_stages + stage) * per_direction + mb;
  }
};

std::string describe_stage(const PipelineLayout& layout, const char* what, int direction, int stage,
                           int64_t mb) {
  const StageSlot slot = layout.slot(direction, stage);
  return detail::concat(what, " of direction ", direction, " stage ", stage, " micro-batch ", mb,
                        " (rank ", slot.rank, " chunk ", slot.chunk, ")");
}

// Checks each rank's list on its own: ranges, every F once, every backward once after its F,
// W in queue order, nothing left queued. `need_backward` is false for forward-only lists.
void check_rank_list(const PipelineLayout& layout, int rank, const std::vector<Instruction>& list,
                     int64_t per_direction, bool need_backward) {
  const int chunks = layout.chunks_per_rank();
  std::vector<std::vector<bool>> forward_seen(chunks, std::vector<bool>(per_direction, false));
  std::vector<std::vector<bool>> backward_seen = forward_seen;
  std::deque<std::pair<int, int64_t>> queued;
  auto where = [&](size_t index) {
    return detail::concat("rank ", rank, " instruction ", index, " (", list[index].to_string(),
                          ")");
  };
  auto check_range = [&](size_t index, int chunk, int64_t mb) {
    TANDEM_USER_CHECK(chunk >= 0 && chunk < chunks, where(index), ": chunk ", chunk,
                      " out of range; this layout has ", chunks, " chunk(s) per rank");
    TANDEM_USER_CHECK(mb >= 0 && mb < per_direction, where(index), ": micro-batch ", mb,
                      " out of range; each chunk runs ", per_direction, " micro-batches");
  };
  auto run_backward = [&](size_t index, int chunk, int64_t mb, bool split) {
    check_range(index, chunk, mb);
    TANDEM_USER_CHECK(need_backward, where(index), ": a forward-only list has a backward");
    TANDEM_USER_CHECK(forward_seen[chunk][mb], where(index),
                      ": backward before the forward of chunk ", chunk, " micro-batch ", mb);
    TANDEM_USER_CHECK(!backward_seen[chunk][mb], where(index), ": second backward of chunk ", chunk,
                      " micro-batch ", mb);
    backward_seen[chunk][mb] = true;
    if (split) queued.emplace_back(chunk, mb);
  };
  auto run_forward = [&](size_t index, int chunk, int64_t mb) {
    check_range(index, chunk, mb);
    TANDEM_USER_CHECK(!forward_seen[chunk][mb], where(index), ": second forward of chunk ", chunk,
                      " micro-batch ", mb);
    forward_seen[chunk][mb] = true;
  };
  for (size_t i = 0; i < list.size(); ++i) {
    const Instruction& in = list[i];
    switch (in.op) {
      case Op::kForward:
        run_forward(i, in.chunk, in.mb);
        break;
      case Op::kBackward:
      case Op::kBackwardInput:
        run_backward(i, in.chunk, in.mb, in.op == Op::kBackwardInput);
        break;
      case Op::kWeight: {
        TANDEM_USER_CHECK(!queued.empty(), where(i),
                          ": W with no queued weight gradient (no b before it)");
        const auto [chunk, mb] = queued.front();
        TANDEM_USER_CHECK(chunk == in.chunk && mb == in.mb, where(i), ": W names chunk ", in.chunk,
                          " micro-batch ", in.mb, " but the oldest queued is chunk ", chunk,
                          " micro-batch ", mb);
        queued.pop_front();
        break;
      }
      case Op::kForwardBackward:
        // Both halves start together, so the backward half may not lean on the forward half.
        run_backward(i, in.chunk_b, in.mb_b, false);
        run_forward(i, in.chunk, in.mb);
        break;
    }
  }
  for (int c = 0; c < chunks; ++c) {
    for (int64_t m = 0; m < per_direction; ++m) {
      TANDEM_USER_CHECK(forward_seen[c][m], "rank ", rank, " never runs the forward F", c, ".", m);
      TANDEM_USER_CHECK(!need_backward || backward_seen[c][m], "rank ", rank,
                        " never runs the backward (B or b) of chunk ", c, " micro-batch ", m);
    }
  }
  if (!queued.empty()) {
    TANDEM_USER_CHECK(false, "rank ", rank, " leaves ", queued.size(),
                      " weight gradient(s) without a W, the first of chunk ", queued.front().first,
                      " micro-batch ", queued.front().second);
  }
}

// Replays the lists as every rank would run them, in order, each instruction waiting for the
// messages it receives; throws naming where each rank is stuck if they cannot all finish.
void check_dependencies(const PipelineLayout& layout,
                        const std::vector<std::vector<Instruction>>& ranks, int64_t per_direction) {
  const int last_stage = layout.n_stages() - 1;
  const WorkIndex index{layout.n_stages(), per_direction};
  const size_t cells = static_cast<size_t>(layout.n_directions()) * layout.n_stages() *
                       static_cast<size_t>(per_direction);
  std::vector<bool> forward_done(cells, false), backward_done(cells, false);
  const int pp = layout.pp();

  // What instruction `in` of `rank` still waits for, or "" when it can run.
  auto waiting_for = [&](int rank, const Instruction& in) -> std::string {
    auto forward_input = [&](int chunk, int64_t mb) -> std::string {
      const int d = layout.direction_of(rank, chunk), s = layout.stage_of(rank, chunk);
      if (s == 0 || forward_done[index(d, s - 1, mb)]) return "";
      return describe_stage(layout, "F", d, s - 1, mb);
    };
    auto backward_input = [&](int chunk, int64_t mb) -> std::string {
      const int d = layout.direction_of(rank, chunk), s = layout.stage_of(rank, chunk);
      if (s == last_stage || backward_done[index(d, s + 1, mb)]) return "";
      return describe_stage(layout, "the backward", d, s + 1, mb);
    };
    switch (in.op) {
      case Op::kForward:
        return forward_input(in.chunk, in.mb);
      case Op::kBackward:
      case Op::kBackwardInput:
        return backward_input(in.chunk, in.mb);
      case Op::kWeight:
        return "";
      case Op::kForwardBackward: {
        std::string wait = forward_input(in.chunk, in.mb);
        std::string wait_b = backward_input(in.chunk_b, in.mb_b);
        if (!wait.empty() && !wait_b.empty()) return wait + " and " + wait_b;
        return wait.empty() ? wait_b : wait;
      }
    }
    return "";
  };
  auto complete = [&](int rank, const Instruction& in) {
    auto mark = [&](std::vector<bool>& done, int chunk, int64_t mb) {
      done[index(layout.direction_of(rank, chunk), layout.stage_of(rank, chunk), mb)] = true;
    };
    if (in.op == Op::kForward || in.op == Op::kForwardBackward) mark(forward_done, in.chunk, in.mb);
    if (in.op == Op::kBackward || in.op == Op::kBackwardInput) mark(backward_done, in.chunk, in.mb);
    if (in.op == Op::kForwardBackward) mark(backward_done, in.chunk_b, in.mb_b);
  };

  std::vector<size_t> next(pp, 0);
  for (;;) {
    bool progressed = false, finished = true;
    for (int r = 0; r < pp; ++r) {
      while (next[r] < ranks[r].size() && waiting_for(r, ranks[r][next[r]]).empty()) {
        complete(r, ranks[r][next[r]]);
        ++next[r];
        progressed = true;
      }
      finished = finished && next[r] == ranks[r].size();
    }
    if (finished) return;
    if (!progressed) break;
  }
  std::ostringstream stuck;
  stuck << "the schedule deadlocks:";
  for (int r = 0; r < pp; ++r) {
    if (next[r] == ranks[r].size()) continue;
    const Instruction& in = ranks[r][next[r]];
    stuck << " rank " << r << " is stuck at instruction " << next[r] << " (" << in.to_string()
          << ") waiting for " << waiting_for(r, in) << ";";
  }
  TANDEM_USER_CHECK(false, stuck.str());
}

}  // namespace

std::string Instruction::to_string() const {
  switch (op) {
    case Op::kForward:
      return detail::concat("F", chunk, ".", mb);
    case Op::kBackward:
      return detail::concat("B", chunk, ".", mb);
    case Op::kBackwardInput:
      return detail::concat("b", chunk, ".", mb);
    case Op::kWeight:
      return "W";
    case Op::kForwardBackward:
      return detail::concat("F", chunk, ".", mb, "&B", chunk_b, ".", mb_b);
  }
  return "?";
}

const char* op_category(Op op) {
  switch (op) {
    case Op::kForward:
      return "F";
    case Op::kBackward:
    case Op::kBackwardInput:
      return "B";
    case Op::kWeight:
      return "W";
    case Op::kForwardBackward:
      return "F&B";
  }
  return "?";
}

PipelineLayout::PipelineLayout(ScheduleKind kind, int pp) : kind_(kind), pp_(pp) {
  TANDEM_USER_CHECK(pp >= 1, "the pipeline size must be at least 1, got pp = ", pp);
  TANDEM_USER_CHECK(kind != ScheduleKind::kDualPipe || pp % 2 == 0,
                    "DualPipe needs an even pipeline size, got pp = ", pp);
}

int PipelineLayout::chunks_per_rank() const {
  return kind_ == ScheduleKind::kDualPipe || kind_ == ScheduleKind::kDualPipeV ? 2 : 1;
}

int PipelineLayout::n_stages() const {
  return kind_ == ScheduleKind::kDualPipeV ? 2 * pp_ : pp_;
}

int PipelineLayout::n_directions() const {
  return kind_ == ScheduleKind::kDualPipe ? 2 : 1;
}

int PipelineLayout::direction_of(int rank, int chunk) const {
  TANDEM_CHECK(rank >= 0 && rank < pp_ && chunk >= 0 && chunk < chunks_per_rank(), "rank ", rank,
               " chunk ", chunk);
  if (kind_ != ScheduleKind::kDualPipe) return 0;
  const bool first_half = rank < pp_ / 2;
  return first_half ? chunk : 1 - chunk;
}

int PipelineLayout::stage_of(int rank, int chunk) const {
  TANDEM_CHECK(rank >= 0 && rank < pp_ && chunk >= 0 && chunk < chunks_per_rank(), "rank ", rank,
               " chunk ", chunk);
  switch (kind_) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZBH1:
      return rank;
    case ScheduleKind::kDualPipe:
      // Direction 0 runs down the ranks, direction 1 up them.
      return direction_of(rank, chunk) == 0 ? rank : pp_ - 1 - rank;
    case ScheduleKind::kDualPipeV:
      return chunk == 0 ? rank : 2 * pp_ - 1 - rank;
  }
  return 0;
}

StageSlot PipelineLayout::slot(int direction, int stage) const {
  TANDEM_CHECK(direction >= 0 && direction < n_directions() && stage >= 0 && stage < n_stages(),
               "direction ", direction, " stage ", stage);
  switch (kind_) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZBH1:
      return {stage, 0};
    case ScheduleKind::kDualPipe: {
      const int rank = direction == 0 ? stage : pp_ - 1 - stage;
      const bool first_half = rank < pp_ / 2;
      return {rank, first_half == (direction == 0) ? 0 : 1};
    }
    case ScheduleKind::kDualPipeV:
      return stage < pp_ ? StageSlot{stage, 0} : StageSlot{2 * pp_ - 1 - stage, 1};
  }
  return {};
}

int64_t PipelineLayout::global_microbatch(int direction, int64_t mb, int64_t microbatches) const {
  return direction * (microbatches / n_directions()) + mb;
}

void validate_schedule_request(ScheduleKind kind, int pp, int64_t microbatches) {
  const std::string_view name = choice_name(kind);
  TANDEM_USER_CHECK(pp >= 1, "the pipeline size must be at least 1, got pp = ", pp);
  TANDEM_USER_CHECK(microbatches >= 1, "a schedule needs at least 1 micro-batch, got ",
                    microbatches);
  switch (kind) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZBH1:
      return;
    case ScheduleKind::kDualPipe:
      TANDEM_USER_CHECK(pp % 2 == 0, name, " needs an even pipeline size, got pp = ", pp,
                        " (use dualpipev for an odd one)");
      TANDEM_USER_CHECK(microbatches % 2 == 0, name,
                        " splits the micro-batches evenly between its two directions, so their "
                        "number must be even, got ",
                        microbatches);
      TANDEM_USER_CHECK(microbatches >= 2 * pp, name, " needs at least 2*pp = ", 2 * pp,
                        " micro-batches for pp = ", pp, ", got ", microbatches);
      return;
    case ScheduleKind::kDualPipeV:
      TANDEM_USER_CHECK(microbatches >= 2 * pp, name, " needs at least 2*pp = ", 2 * pp,
                        " micro-batches for pp = ", pp, ", got ", microbatches);
      return;
  }
}

Schedule make_schedule(ScheduleKind kind, int pp, int64_t microbatches) {
  validate_schedule_request(kind, pp, microbatches);
  Schedule schedule;
  schedule.kind = kind;
  schedule.pp = pp;
  schedule.microbatches = microbatches;
  schedule.ranks.resize(pp);
  for (int r = 0; r < pp; ++r) {
    switch (kind) {
      case ScheduleKind::k1F1B:
        schedule.ranks[r] = one_f_one_b_rank(pp, r, microbatches);
        break;
      case ScheduleKind::kZBH1:
        schedule.ranks[r] = zb_h1_rank(pp, r, microbatches);
        break;
      case ScheduleKind::kDualPipe: {
        const int n = pp / 2, h = std::min(r, pp - 1 - r);
        schedule.ranks[r] = dualpipe_rank(n, h, microbatches / 2, h == n - 1);
        break;
      }
      case ScheduleKind::kDualPipeV:
        schedule.ranks[r] = dualpipe_rank(pp, r, microbatches, r == pp - 1);
        break;
    }
  }
  return schedule;
}

std::vector<std::vector<Instruction>> forward_only(const PipelineLayout& layout,
                                                   int64_t microbatches) {
  // Only direction 0 is used, for every micro-batch: evaluation has no backward to balance, so
  // DualPipe's second direction (and its duplicate parameters) stays idle, and micro-batch m of
  // the batch is F{c}.m on direction 0's chunk for all m in [0, microbatches).
  std::vector<std::vector<Instruction>> ranks(layout.pp());
  for (int r = 0; r < layout.pp(); ++r) {
    std::vector<int> chunks;
    for (int c = 0; c < layout.chunks_per_rank(); ++c) {
      if (layout.direction_of(r, c) == 0) chunks.push_back(c);
    }
    std::sort(chunks.begin(), chunks.end(),
              [&](int a, int b) { return layout.stage_of(r, a) < layout.stage_of(r, b); });
    for (int64_t m = 0; m < microbatches; ++m) {
      for (int c : chunks) ranks[r].push_back(Instruction{Op::kForward, c, m, 0, 0});
    }
  }
  return ranks;
}

void check_forward_only(const PipelineLayout& layout,
                        const std::vector<std::vector<Instruction>>& ranks, int64_t microbatches) {
  TANDEM_USER_CHECK(static_cast<int>(ranks.size()) == layout.pp(), "the forward-only order has ",
                    ranks.size(), " rank lists for pp = ", layout.pp());
  for (int r = 0; r < layout.pp(); ++r) {
    // Chunks of direction 1 must stay empty, so check_rank_list (which wants every chunk used)
    // does not fit here.
    for (const Instruction& in : ranks[r]) {
      TANDEM_USER_CHECK(in.op == Op::kForward, "rank ", r, ": forward-only list has ",
                        in.to_string());
      TANDEM_USER_CHECK(in.chunk >= 0 && in.chunk < layout.chunks_per_rank() &&
                            layout.direction_of(r, in.chunk) == 0,
                        "rank ", r, ": forward-only ", in.to_string(),
                        " is not on a direction-0 chunk");
    }
    std::vector<bool> seen(static_cast<size_t>(layout.chunks_per_rank()) * microbatches, false);
    for (const Instruction& in : ranks[r]) {
      TANDEM_USER_CHECK(in.mb >= 0 && in.mb < microbatches, "rank ", r, ": ", in.to_string(),
                        " out of range");
      const size_t cell = static_cast<size_t>(in.chunk) * microbatches + in.mb;
      TANDEM_USER_CHECK(!seen[cell], "rank ", r, " runs ", in.to_string(), " twice");
      seen[cell] = true;
    }
    for (int c = 0; c < layout.chunks_per_rank(); ++c) {
      if (layout.direction_of(r, c) != 0) continue;
      for (int64_t m = 0; m < microbatches; ++m) {
        TANDEM_USER_CHECK(seen[static_cast<size_t>(c) * microbatches + m], "rank ", r,
                          " never runs F", c, ".", m);
      }
    }
  }
  check_dependencies(layout, ranks, microbatches);
}

void check_schedule(const Schedule& schedule) {
  const PipelineLayout layout = schedule.layout();
  TANDEM_USER_CHECK(static_cast<int>(schedule.ranks.size()) == schedule.pp, "the schedule has ",
                    schedule.ranks.size(), " rank lists for pp = ", schedule.pp);
  TANDEM_USER_CHECK(schedule.microbatches >= layout.n_directions() &&
                        schedule.microbatches % layout.n_directions() == 0,
                    schedule.microbatches, " micro-batches do not split evenly over ",
                    layout.n_directions(), " direction(s)");
  const int64_t per_direction = schedule.microbatches / layout.n_directions();
  for (int r = 0; r < schedule.pp; ++r) {
    check_rank_list(layout, r, schedule.ranks[r], per_direction, /*need_backward=*/true);
  }
  check_dependencies(layout, schedule.ranks, per_direction);
}

std::string format_schedule(const Schedule& schedule) {
  std::string out;
  for (size_t r = 0; r < schedule.ranks.size(); ++r) {
    out += detail::concat("rank ", r, ":");
    for (const Instruction& in : schedule.ranks[r]) {
      out += ' ';
      out += in.to_string();
    }
    out += "\n";
  }
  return out;
}

}  // namespace tandem::parallel
