// Parameter counts and training FLOPs per token of a model configuration, from the shapes alone.
#pragma once

#include <cstdint>

#include "runtime/core/config.h"

namespace tandem {

struct ModelStats {
  int64_t params = 0;         // every trained parameter
  int64_t active_params = 0;  // parameters one token's forward touches (top_k of the experts)
  // Training FLOPs per token: 3 × forward (forward, dgrad, wgrad), counting 2 per multiply-add of
  // every matrix product a token takes part in, including the causal attention core
  // (QKᵀ and PV over an average context of (seq_len + 1) / 2). Elementwise work is not counted.
  double flops_per_token = 0;
};

ModelStats model_stats(const ModelConfig& config);

}  // namespace tandem
