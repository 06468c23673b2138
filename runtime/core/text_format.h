// Small text formats shared by what tandem prints and serves: durations for people, and text
// made safe inside XML/HTML (SVG charts, the live page).
#pragma once

#include <string>

namespace tandem {

// "1h05m", "3m07s", "42s"; negative seconds count as 0; "-" for NaN or infinity.
std::string format_duration_hms(double seconds);
// `text` with & < > " replaced by their entities.
std::string xml_escape(const std::string& text);

}  // namespace tandem
