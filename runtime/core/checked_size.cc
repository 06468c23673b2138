// Checked products of sizes and the message that names every factor.
#include "runtime/core/checked_size.h"

#include <algorithm>
#include <bit>
#include <string>
#include <vector>

#include "runtime/core/errors.h"

namespace tandem {

std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) return std::nullopt;
  return sum;
}

namespace {
// "2^44 = 17592186044416" for a power of two, else the number.
std::string limit_text(int64_t limit) {
  if (limit > 1024 && std::has_single_bit(static_cast<uint64_t>(limit)))
    return detail::concat("2^", std::countr_zero(static_cast<uint64_t>(limit)), " = ", limit);
  return std::to_string(limit);
}
}  // namespace

int64_t size_product(std::string_view what, std::initializer_list<NamedSize> factors,
                     int64_t limit) {
  std::optional<int64_t> product = 1;
  for (const NamedSize& factor : factors) {
    TANDEM_CHECK(factor.value >= 0, factor.name, " = ", factor.value, " is negative in ", what);
    if (product) product = checked_mul(*product, factor.value);
  }
  if (product && *product <= limit) return *product;
  std::string names, values;
  std::vector<std::string_view> keys;
  for (const NamedSize& factor : factors) {
    names += detail::concat(names.empty() ? "" : " * ", factor.name);
    values += detail::concat(values.empty() ? "" : " * ", factor.value);
    // Only config keys ("section.key") are something to lower; the constants are the model's.
    if (factor.name.find('.') != std::string_view::npos &&
        std::find(keys.begin(), keys.end(), factor.name) == keys.end())
      keys.push_back(factor.name);
  }
  std::string lower;
  for (size_t i = 0; i < keys.size(); ++i)
    lower += detail::concat(i == 0 ? "" : i + 1 == keys.size() ? " or " : ", ", keys[i]);
  throw Error(detail::concat(names, " = ", values, " (", what, ") ",
                             product ? detail::concat("= ", *product, " is") : std::string("is"),
                             " more than ", limit_text(limit),
                             " elements, the most one tensor may hold; lower ", lower));
}

}  // namespace tandem
