// A batch of random tokens and targets for model tests: `sequences` sequences of seq_len tokens
// each, every id drawn from (seed, stream, position).
#pragma once

#include "runtime/core/config.h"
#include "runtime/core/random.h"
#include "runtime/core/tensor.h"

namespace tandem::testing {

struct Batch {
  Tensor tokens, targets;  // int32 [sequences · seq_len]
};

inline Batch make_batch(int64_t sequences, const ModelConfig& c, uint64_t seed) {
  Batch b{Tensor::empty({sequences * c.seq_len}, DType::kI32),
          Tensor::empty({sequences * c.seq_len}, DType::kI32)};
  for (int64_t i = 0; i < b.tokens.numel(); ++i) {
    b.tokens.data<int32_t>()[i] = static_cast<int32_t>(random_bits(seed, 1, i) % c.vocab_size);
    b.targets.data<int32_t>()[i] = static_cast<int32_t>(random_bits(seed, 2, i) % c.vocab_size);
  }
  return b;
}

}  // namespace tandem::testing
