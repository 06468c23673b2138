// The wire between a rank and its node's tandem-launch for metrics (TANDEM_METRICS_FD, a Unix
// stream socket the launcher hands every rank): length-prefixed frames, each a kind, a request
// number and a body. The rank says hello once (what the launcher needs from its configuration)
// and gets the launcher's answer (the node endpoint, or why there is none); from then on the
// launcher asks ("your exposition", "your /status page") and the rank replies with the same
// request number, so that a late reply to a scrape that gave up on it is told apart and dropped.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::monitoring {

enum class FrameKind : uint8_t {
  kHello = 'H',        // rank -> launcher: RelayHello as JSON
  kHelloAnswer = 'A',  // launcher -> rank: {"endpoint": E} or {"error": TEXT}
  kAskMetrics = 'm',   // launcher -> rank: its exposition, please
  kAskStatus = 's',    // launcher -> rank: its /status page, please
  kReply = 'R',        // rank -> launcher: the body asked for
  kNotServing = 'N',   // rank -> launcher: nothing to give yet (before serve(), no page)
};

struct Frame {
  FrameKind kind = FrameKind::kHello;
  uint32_t request = 0;  // echoed by a reply
  std::string body;
};

// A frame this large is a broken peer, not an exposition (one rank's is well under 1 MiB).
constexpr uint32_t kMaxFrameBytes = 64u << 20;

// The frame as bytes: u32 length of what follows (little-endian), kind, u32 request, body.
std::string encode_frame(const Frame& frame);

// Takes bytes as they arrive and hands back whole frames.
class FrameReader {
 public:
  void append(std::string_view bytes) { buffer_.append(bytes); }
  // The next whole frame, or nullopt until more bytes come. Throws an Error on a length past
  // kMaxFrameBytes or an unknown kind: the stream cannot be trusted after either.
  std::optional<Frame> next();

 private:
  std::string buffer_;
  size_t consumed_ = 0;  // bytes of buffer_ already handed back as frames
};

// What a rank tells its launcher in its hello, from its configuration and its place.
struct RelayHello {
  std::string bind;  // monitoring.bind
  int port = 0;      // monitoring.metrics_port (the node's, not plus LOCAL_RANK)
  std::string sd_file, job;
  int rank = 0, local_rank = 0, world_size = 1;
  std::string node;  // host name
};
std::string encode_hello(const RelayHello& hello);
RelayHello decode_hello(std::string_view json);  // throws an Error on a malformed one

}  // namespace tandem::monitoring
