// A channel of point-to-point messages: every message of one class (its tag modulo the class
// count) from one rank of a group to another. Where a transport matches messages only by their
// order (NCCL), each channel gets its own communicator; see parallelism/pipeline_channels.h.
#pragma once

#include <compare>

namespace tandem::comm {

struct MessageChannel {
  int from = 0, to = 0;  // ranks of the group
  int message_class = 0;
  auto operator<=>(const MessageChannel&) const = default;
};

}  // namespace tandem::comm
