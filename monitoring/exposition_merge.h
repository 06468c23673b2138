// Merging the Prometheus text expositions of several ranks into one, as the node endpoint of
// tandem-launch serves them: each family's `# HELP` and `# TYPE` once, then the samples of every
// exposition in the order given. The samples stay apart by their labels (every series of a rank
// carries its `rank`), so nothing is summed or dropped; a scrape of the merged text is one of
// every rank.
#pragma once

#include <string>
#include <vector>

namespace tandem::monitoring {

// Families in the order they first appear; an exposition's sample belongs to the family whose
// `# HELP`/`# TYPE` came last before it (prometheus-cpp writes them so). Other comments go.
std::string merge_expositions(const std::vector<std::string>& expositions);

}  // namespace tandem::monitoring
