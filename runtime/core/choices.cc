// Parsing the names of configuration choices: case-insensitive, with the nearest name suggested.
#include "runtime/core/choices.h"

#include <algorithm>
#include <cctype>

#include "runtime/core/errors.h"

namespace tandem {

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string quoted_names(const std::vector<std::string_view>& names) {
  std::string list;
  for (std::string_view name : names)
    list += detail::concat(list.empty() ? "" : ", ", "\"", name, "\"");
  return list;
}

std::string unknown_choice_message(std::string_view what, std::string_view text,
                                   const std::vector<std::string_view>& names) {
  std::string lowered(text);
  for (char& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view nearest;
  size_t best = SIZE_MAX;
  for (std::string_view name : names) {
    const size_t distance = edit_distance(lowered, name);
    if (distance < best) best = distance, nearest = name;
  }
  std::string message =
      detail::concat(what, " = \"", text, "\" is not one of ", quoted_names(names));
  if (!nearest.empty() && best <= std::max<size_t>(2, nearest.size() / 3))
    message += detail::concat("; did you mean \"", nearest, "\"?");
  return message;
}

void throw_unknown_choice(std::string_view what, std::string_view text,
                          const std::vector<std::string_view>& names) {
  throw Error(unknown_choice_message(what, text, names));
}

}  // namespace tandem
