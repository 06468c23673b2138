// Shape arithmetic for parameter counts and FLOPs.
#include "runtime/model/model_stats.h"

namespace tandem {

ModelStats model_stats(const ModelConfig& c) {
  const int64_t d = c.d_model, f = c.d_expert;
  const int64_t attention = 4 * d * d;
  const int64_t dense_ffn = 3 * d * c.d_ff;
  const int64_t router = c.n_routed_experts * d;
  const int64_t shared = 3 * d * f * c.n_shared_experts;
  const int64_t expert = 3 * d * f;
  const int64_t head = c.vocab_size * d;
  const int64_t n_moe = c.n_layers - c.n_dense_layers;

  ModelStats s;
  // Matrices a token multiplies through (the embedding is a lookup: no FLOPs).
  const int64_t matmul_active = c.n_layers * attention + c.n_dense_layers * dense_ffn +
                                n_moe * (router + shared + c.top_k * expert) + head;
  const int64_t norms = d * (2 * c.n_layers + 1);
  s.params = c.vocab_size * d + c.n_layers * attention + c.n_dense_layers * dense_ffn +
             n_moe * (router + shared + c.n_routed_experts * expert) + head + norms;
  s.active_params = c.vocab_size * d + matmul_active + norms;
  const double attention_core = 2.0 * 2.0 * d * (c.seq_len + 1) / 2.0 * c.n_layers;
  s.flops_per_token = 3.0 * (2.0 * matmul_active + attention_core);
  return s;
}

}  // namespace tandem
