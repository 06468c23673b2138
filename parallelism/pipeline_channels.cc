// Message tags and classes, the messages each program issues, and the FIFO check per channel.
#include "parallelism/pipeline_channels.h"

#include <algorithm>
#include <map>
#include <set>

#include "runtime/core/errors.h"

namespace tandem::parallel {

int pipeline_message_classes(const PipelineLayout& layout) {
  return 2 * layout.n_directions() * layout.n_stages();
}

int pipeline_message_tag(const PipelineLayout& layout, PipelineMessageKind kind, int direction,
                         int receiving_stage, int64_t mb) {
  const int cls = (static_cast<int>(kind) * layout.n_directions() + direction) * layout.n_stages() +
                  receiving_stage;
  return static_cast<int>(mb * pipeline_message_classes(layout) + cls);
}

int pipeline_message_class(const PipelineLayout& layout, int tag) {
  return tag % pipeline_message_classes(layout);
}

void pipeline_messages(const PipelineLayout& layout, int rank,
                       const std::vector<Instruction>& program, std::vector<PipelineMessage>& sends,
                       std::vector<PipelineMessage>& receives) {
  const int last = layout.n_stages() - 1;
  auto receive = [&](int chunk, int64_t mb, PipelineMessageKind kind) {
    const int s = layout.stage_of(rank, chunk), d = layout.direction_of(rank, chunk);
    const bool activation = kind == PipelineMessageKind::kActivation;
    if (activation ? s == 0 : s == last) return;
    const StageSlot from = layout.slot(d, activation ? s - 1 : s + 1);
    if (from.rank != rank)
      receives.push_back({from.rank, pipeline_message_tag(layout, kind, d, s, mb)});
  };
  auto send = [&](int chunk, int64_t mb, PipelineMessageKind kind) {
    const int s = layout.stage_of(rank, chunk), d = layout.direction_of(rank, chunk);
    const bool activation = kind == PipelineMessageKind::kActivation;
    if (activation ? s == last : s == 0) return;
    const int to_stage = activation ? s + 1 : s - 1;
    const StageSlot to = layout.slot(d, to_stage);
    if (to.rank != rank)
      sends.push_back({to.rank, pipeline_message_tag(layout, kind, d, to_stage, mb)});
  };
  // Each instruction's messages, in the order the executor handles them: an F&B's forward first.
  auto each_message = [&program](auto&& message) {
    using K = PipelineMessageKind;
    for (const Instruction& ins : program) {
      switch (ins.op) {
        case Op::kForward:
          message(ins.chunk, ins.mb, K::kActivation);
          break;
        case Op::kBackward:
        case Op::kBackwardInput:
          message(ins.chunk, ins.mb, K::kGradient);
          break;
        case Op::kForwardBackward:
          message(ins.chunk, ins.mb, K::kActivation);
          message(ins.chunk_b, ins.mb_b, K::kGradient);
          break;
        case Op::kWeight:
          break;
      }
    }
  };
  each_message(receive);
  each_message(send);
}

std::vector<PipelineChannel> pipeline_channels(
    const PipelineLayout& layout,
    const std::vector<std::vector<std::vector<Instruction>>>& programs) {
  std::set<PipelineChannel> channels;
  for (const auto& ranks : programs) {
    TANDEM_CHECK(static_cast<int>(ranks.size()) == layout.pp(), "pipeline channels: ", ranks.size(),
                 " programs for pp = ", layout.pp());
    std::map<PipelineChannel, std::vector<int>> sent, received;
    for (int r = 0; r < layout.pp(); ++r) {
      std::vector<PipelineMessage> sends, receives;
      pipeline_messages(layout, r, ranks[r], sends, receives);
      for (const PipelineMessage& m : sends)
        sent[{r, m.peer, pipeline_message_class(layout, m.tag)}].push_back(m.tag);
      for (const PipelineMessage& m : receives)
        received[{m.peer, r, pipeline_message_class(layout, m.tag)}].push_back(m.tag);
    }
    for (const auto& [channel, tags] : sent) {
      const std::vector<int>& got = received[channel];
      if (tags != got) {
        size_t i = 0;
        while (i < tags.size() && i < got.size() && tags[i] == got[i]) ++i;
        TANDEM_FAIL("pipeline channel rank ", channel.from, " → rank ", channel.to, " (class ",
                    channel.message_class, "): the sender's message ", i, " has tag ",
                    i < tags.size() ? tags[i] : -1, " but the receiver's has tag ",
                    i < got.size() ? got[i] : -1, " (", tags.size(), " sent, ", got.size(),
                    " received); NCCL matches messages by order, so this ",
                    choice_name(layout.kind()), " program cannot run on it: choose another ",
                    "parallel.schedule, or train.device = \"cpu\"");
      }
      channels.insert(channel);
    }
    for (const auto& [channel, tags] : received)
      TANDEM_CHECK(sent.count(channel), "pipeline channel rank ", channel.from, " → rank ",
                   channel.to, " (class ", channel.message_class, "): ", tags.size(),
                   " messages received, none sent");
  }
  return {channels.begin(), channels.end()};
}

std::vector<std::vector<PipelineChannel>> channel_rounds(
    const std::vector<PipelineChannel>& channels) {
  std::vector<std::vector<PipelineChannel>> rounds;
  std::vector<std::set<int>> busy;
  for (const PipelineChannel& c : channels) {
    size_t r = 0;
    while (r < rounds.size() && (busy[r].count(c.from) || busy[r].count(c.to))) ++r;
    if (r == rounds.size()) rounds.emplace_back(), busy.emplace_back();
    rounds[r].push_back(c);
    busy[r].insert(c.from);
    busy[r].insert(c.to);
  }
  return rounds;
}

}  // namespace tandem::parallel
