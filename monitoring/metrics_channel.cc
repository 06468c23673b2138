// Frames and the hello of the rank-to-launcher metrics wire.
#include "monitoring/metrics_channel.h"

#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"

namespace tandem::monitoring {

namespace {

constexpr size_t kHeaderBytes = 4 + 1 + 4;

void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* bytes) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i)
    value |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  return value;
}

bool known(uint8_t kind) {
  for (FrameKind k : {FrameKind::kHello, FrameKind::kHelloAnswer, FrameKind::kAskMetrics,
                      FrameKind::kAskStatus, FrameKind::kReply, FrameKind::kNotServing})
    if (kind == static_cast<uint8_t>(k)) return true;
  return false;
}

}  // namespace

std::string encode_frame(const Frame& frame) {
  TANDEM_CHECK(frame.body.size() <= kMaxFrameBytes - 5, "a metrics frame of ", frame.body.size(),
               " bytes");
  std::string out;
  out.reserve(kHeaderBytes + frame.body.size());
  put_u32(out, static_cast<uint32_t>(1 + 4 + frame.body.size()));
  out.push_back(static_cast<char>(frame.kind));
  put_u32(out, frame.request);
  out += frame.body;
  return out;
}

std::optional<Frame> FrameReader::next() {
  const size_t available = buffer_.size() - consumed_;
  if (available < kHeaderBytes) return std::nullopt;
  const char* at = buffer_.data() + consumed_;
  const uint32_t length = get_u32(at);
  TANDEM_CHECK(length >= 5 && length <= kMaxFrameBytes, "a metrics frame claims ", length,
               " bytes: the peer is not speaking tandem's metrics wire");
  const auto kind = static_cast<uint8_t>(at[4]);
  TANDEM_CHECK(known(kind), "a metrics frame of unknown kind ", static_cast<int>(kind));
  if (available < 4 + size_t{length}) return std::nullopt;
  Frame frame{static_cast<FrameKind>(kind), get_u32(at + 5),
              std::string(at + kHeaderBytes, length - 5)};
  consumed_ += 4 + size_t{length};
  // Whole frames are dropped from the front once they are half the buffer: amortised O(1).
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > buffer_.size() / 2) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  return frame;
}

std::string encode_hello(const RelayHello& h) {
  return nlohmann::json{{"bind", h.bind},
                        {"port", h.port},
                        {"sd_file", h.sd_file},
                        {"job", h.job},
                        {"rank", h.rank},
                        {"local_rank", h.local_rank},
                        {"world_size", h.world_size},
                        {"node", h.node}}
      .dump();
}

RelayHello decode_hello(std::string_view json) {
  try {
    const nlohmann::json j = nlohmann::json::parse(json);
    return {j.at("bind").get<std::string>(),
            j.at("port").get<int>(),
            j.at("sd_file").get<std::string>(),
            j.at("job").get<std::string>(),
            j.at("rank").get<int>(),
            j.at("local_rank").get<int>(),
            j.at("world_size").get<int>(),
            j.at("node").get<std::string>()};
  } catch (const nlohmann::json::exception& error) {
    TANDEM_FAIL("a rank's metrics hello '", json,
                "' is not one encode_hello wrote: ", error.what());
  }
}

}  // namespace tandem::monitoring
