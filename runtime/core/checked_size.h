// Sizes that cannot wrap around: products and sums of extents and counts in checked int64
// arithmetic, bounded by what one process can address, so that an absurd configuration is refused
// with its numbers instead of overflowing into a crash or a negative size.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string_view>

namespace tandem {

// The most elements one tensor, or the whole model's parameters, may have: 2^44, so that even at
// 8 bytes per element it stays within the 2^47 bytes (128 TiB) of user address space that x86-64
// and AArch64 give a process with 48-bit virtual addresses.
inline constexpr int64_t kMaxElements = int64_t{1} << 44;

// a * b and a + b, or nullopt when the result does not fit int64.
std::optional<int64_t> checked_mul(int64_t a, int64_t b);
std::optional<int64_t> checked_add(int64_t a, int64_t b);

// One factor of a size product, named as the user would find it (a config key, or a constant of
// the model's shapes such as "3" for the fused q, k and v).
struct NamedSize {
  std::string_view name;
  int64_t value;
};

// The product of `factors` (each >= 0), or an Error when it overflows or exceeds `limit`:
//   "model.vocab_size * model.d_model = 144115188075855872 * 128 (the embedding) is more than
//    2^44 = 17592186044416 elements, the most one tensor may hold; lower model.vocab_size or
//    model.d_model"
int64_t size_product(std::string_view what, std::initializer_list<NamedSize> factors,
                     int64_t limit = kMaxElements);

}  // namespace tandem
