// Counter-based random numbers: a value is a pure function of (seed, stream, index), so any rank
// can generate exactly the numbers of the parameters and samples it owns, in any order.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/core/tensor.h"

namespace tandem {

// SplitMix64's finaliser: a bijective mix of 64 bits.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ stream) ^ index);
}

// Uniform in [0, 1) with 53 random bits.
inline double random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return static_cast<double>(random_bits(seed, stream, index) >> 11) * 0x1.0p-53;
}

// FNV-1a of a name, to derive a stream id from a parameter's name.
inline uint64_t stream_of(std::string_view name) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : name) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return hash;
}

// Fills an fp32/fp64 tensor with N(0, std²) (Box–Muller on pairs of counter-based uniforms).
void fill_normal(Tensor& tensor, double std, uint64_t seed, uint64_t stream);
// Fills an fp32/fp64 tensor with a constant.
void fill_constant(Tensor& tensor, double value);

}  // namespace tandem
