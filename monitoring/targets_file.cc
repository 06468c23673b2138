// Encoding the targets between ranks and writing Prometheus's file_sd JSON.
#include "monitoring/targets_file.h"

#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"

namespace tandem::monitoring {

std::string encode_target(const ScrapeTarget& target) {
  return nlohmann::json{{"endpoint", target.endpoint}, {"rank", target.rank}, {"node", target.node}}
      .dump();
}

ScrapeTarget decode_target(std::string_view text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    return {j.at("endpoint").get<std::string>(), j.at("rank").get<int>(),
            j.at("node").get<std::string>()};
  } catch (const nlohmann::json::exception& error) {
    TANDEM_FAIL("a rank's scrape target '", text,
                "' is not one encode_target wrote: ", error.what());
  }
}

std::string targets_file_json(const std::vector<ScrapeTarget>& targets, std::string_view job) {
  nlohmann::json out = nlohmann::json::array();
  for (const ScrapeTarget& t : targets)
    out.push_back({{"targets", {t.endpoint}},
                   {"labels", {{"job", job}, {"rank", std::to_string(t.rank)}, {"node", t.node}}}});
  return out.dump(2) + "\n";
}

std::string node_targets_file_json(const std::vector<NodeTarget>& targets, std::string_view job) {
  nlohmann::json out = nlohmann::json::array();
  for (const NodeTarget& t : targets)
    if (!t.endpoint.empty())
      out.push_back({{"targets", {t.endpoint}}, {"labels", {{"job", job}, {"node", t.node}}}});
  return out.dump(2) + "\n";
}

void write_targets_file(const std::string& path, const std::vector<ScrapeTarget>& targets,
                        std::string_view job) {
  write_output_file("monitoring.sd_file", path, targets_file_json(targets, job));
}

}  // namespace tandem::monitoring
