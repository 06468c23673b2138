// Pipeline messages as ordered channels. Each message the executor sends has a tag naming its
// kind (activation or gradient), direction, receiving stage and micro-batch; its class is the tag
// without the micro-batch. A channel is (sender, receiver, class): every message of a class between
// two ranks travels on it. NCCL matches point-to-point operations only by posting order, so on
// the GPU each channel is its own two-rank communicator, and the sender's order of sends must be
// the receiver's order of receives — which pipeline_channels() checks for the programs the job
// will run, instead of letting NCCL hand one micro-batch's activations to another.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/message_channel.h"
#include "parallelism/schedule.h"

namespace tandem::parallel {

enum class PipelineMessageKind : int { kActivation = 0, kGradient = 1 };

// Classes of a layout: 2 kinds × its directions × its stages.
int pipeline_message_classes(const PipelineLayout& layout);
// A unique tag below pipeline_message_classes · microbatches: the micro-batch is the high part,
// so the class (tag % classes) needs no micro-batch count.
int pipeline_message_tag(const PipelineLayout& layout, PipelineMessageKind kind, int direction,
                         int receiving_stage, int64_t mb);
int pipeline_message_class(const PipelineLayout& layout, int tag);

using PipelineChannel = comm::MessageChannel;  // between pipeline ranks

// One pipeline message as a rank's program issues it.
struct PipelineMessage {
  int peer = 0;  // the receiver of a send, the sender of a receive
  int tag = 0;
};
// What rank `rank` sends and receives running `program`, in the executor's order: receives in
// program order (for F&B the forward's, then the backward's); sends as instructions finish (for
// F&B the forward's, then the backward's). Hand-overs on the rank itself are not messages.
void pipeline_messages(const PipelineLayout& layout, int rank,
                       const std::vector<Instruction>& program, std::vector<PipelineMessage>& sends,
                       std::vector<PipelineMessage>& receives);

// Every channel the programs use (each a list of per-rank programs: training, forward-only), in a
// fixed order. Throws naming the channel and the first two messages out of order where a sender
// sends in another order than its receiver receives.
std::vector<PipelineChannel> pipeline_channels(
    const PipelineLayout& layout,
    const std::vector<std::vector<std::vector<Instruction>>>& programs);

// Channels in rounds where no rank is in two channels, so that each round's two-rank groups can
// be made by one split of the pipeline group (greedy, in the channels' order).
std::vector<std::vector<PipelineChannel>> channel_rounds(
    const std::vector<PipelineChannel>& channels);

}  // namespace tandem::parallel
