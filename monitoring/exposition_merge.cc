// One exposition out of several: families gathered by name, samples kept in order.
#include "monitoring/exposition_merge.h"

#include <map>
#include <string_view>

namespace tandem::monitoring {

namespace {

struct Family {
  std::string help, type;  // whole lines, newline included; "" when none came
  std::string samples;
};

// "# HELP name ..." -> name (the same for "# TYPE"); "" for other lines.
std::string_view family_of(std::string_view line, std::string_view keyword) {
  if (!line.starts_with(keyword)) return {};
  line.remove_prefix(keyword.size());
  return line.substr(0, line.find(' '));
}

}  // namespace

std::string merge_expositions(const std::vector<std::string>& expositions) {
  std::vector<std::string> order;
  std::map<std::string, Family, std::less<>> families;
  auto family = [&](std::string_view name) -> Family& {
    auto it = families.find(name);
    if (it == families.end()) {
      order.emplace_back(name);
      it = families.emplace(std::string(name), Family{}).first;
    }
    return it->second;
  };
  for (const std::string& text : expositions) {
    Family* current = nullptr;
    for (size_t start = 0; start < text.size();) {
      const size_t end = std::min(text.find('\n', start), text.size());
      const std::string_view line(text.data() + start, end - start);
      start = end + 1;
      if (line.empty()) continue;
      const std::string line_text = std::string(line) + "\n";
      if (const auto name = family_of(line, "# HELP "); !name.empty()) {
        current = &family(name);
        if (current->help.empty()) current->help = line_text;
      } else if (const auto typed = family_of(line, "# TYPE "); !typed.empty()) {
        current = &family(typed);
        if (current->type.empty()) current->type = line_text;
      } else if (line[0] == '#') {
        continue;
      } else {
        // A sample before any HELP or TYPE is a family of its own name.
        if (!current) current = &family(line.substr(0, line.find_first_of("{ ")));
        current->samples += line_text;
      }
    }
  }
  std::string out;
  for (const std::string& name : order) {
    const Family& f = families.at(name);
    out += f.help + f.type + f.samples;
  }
  return out;
}

}  // namespace tandem::monitoring
