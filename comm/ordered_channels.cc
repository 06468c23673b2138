// Ordered channels, made round by round; on a channel every message has tag 0, so that the
// order is the only thing that matches it, on every backend.
#include "comm/ordered_channels.h"

#include <set>

namespace tandem::comm {

OrderedChannels::OrderedChannels(Communicator& group, int message_classes,
                                 const std::vector<std::vector<MessageChannel>>& rounds)
    : group_(group), message_classes_(message_classes) {
  TANDEM_CHECK(message_classes > 0, "ordered channels on ", group.name(), ": ", message_classes,
               " message classes");
  const int me = group.rank();
  for (const auto& round : rounds) {
    int color = -1, key = 0;
    const MessageChannel* mine = nullptr;
    std::set<int> in_round;
    for (size_t i = 0; i < round.size(); ++i) {
      const MessageChannel& c = round[i];
      TANDEM_CHECK(c.from != c.to && c.from >= 0 && c.to >= 0 && c.from < size() && c.to < size() &&
                       c.message_class >= 0 && c.message_class < message_classes &&
                       in_round.insert(c.from).second && in_round.insert(c.to).second,
                   "ordered channels on ", group.name(), ": channel ", c.from, " → ", c.to,
                   " (class ", c.message_class, ") is not between two distinct ranks of the ",
                   "group, once per round");
      if (c.from == me || c.to == me) {
        color = static_cast<int>(i);
        key = c.to == me;  // the sender is the channel's rank 0
        mine = &c;
      }
    }
    std::unique_ptr<Communicator> comm = group.split_some(color, key);
    if (!mine) continue;
    TANDEM_CHECK(comm && comm->size() == 2 && comm->rank() == key, "channel ", mine->from, " → ",
                 mine->to, " on ", group.name(), " is not a two-rank group");
    // Connected now, pair by pair in the round (NCCL connects on the first message and blocks
    // until the peer is there: a receive posted ahead would otherwise wait on a peer blocked in
    // connecting another channel).
    Tensor token = Tensor::zeros({1}, DType::kU8, comm->device());
    (key == 0 ? comm->send(token, 1, 0) : comm->recv(token, 0, 0)).wait();
    TANDEM_CHECK(channels_.emplace(*mine, std::move(comm)).second, "channel ", mine->from, " → ",
                 mine->to, " (class ", mine->message_class, ") listed twice on ", group.name());
  }
}

Communicator& OrderedChannels::channel(int from, int to, int tag, const char* op) {
  TANDEM_CHECK(tag >= 0, op, " on ", group_.name(), ": negative tag ", tag);
  const MessageChannel key{from, to, tag % message_classes_};
  auto it = channels_.find(key);
  TANDEM_CHECK(it != channels_.end(), op, " of tag ", tag, " from rank ", from, " to rank ", to,
               " of ", group_.name(), ": no channel carries its class ", key.message_class,
               " (the channels were made for other programs)");
  return *it->second;
}

CommHandle OrderedChannels::send(const Tensor& tensor, int peer, int tag) {
  return channel(rank(), peer, tag, "send").send(tensor, 1, 0);
}

CommHandle OrderedChannels::recv(Tensor& tensor, int peer, int tag) {
  return channel(peer, rank(), tag, "recv").recv(tensor, 0, 0);
}

}  // namespace tandem::comm
