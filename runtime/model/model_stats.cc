// Shape arithmetic for parameter counts and FLOPs, in checked integers: validate_config bounds each
// tensor, but their sum over every layer can still pass what one process can address.
#include "runtime/model/model_stats.h"

#include <optional>

#include "runtime/core/checked_size.h"
#include "runtime/core/errors.h"

namespace tandem {

namespace {

// An int64 count that remembers overflowing instead of wrapping around.
class Count {
 public:
  Count(int64_t value) : value_(value) {}  // implicit: the formulas below read as arithmetic
  friend Count operator*(Count a, Count b) {
    return a.value_ && b.value_ ? Count(checked_mul(*a.value_, *b.value_)) : Count(std::nullopt);
  }
  friend Count operator+(Count a, Count b) {
    return a.value_ && b.value_ ? Count(checked_add(*a.value_, *b.value_)) : Count(std::nullopt);
  }
  friend Count operator-(Count a, Count b) {  // only of sizes validate_config ordered
    return a.value_ && b.value_ ? Count(*a.value_ - *b.value_) : Count(std::nullopt);
  }
  // The count, or the Error saying that the model is too large to hold.
  int64_t within_limit(std::string_view what) const {
    TANDEM_USER_CHECK(value_ && *value_ <= kMaxElements, "model: ", what,
                      value_ ? detail::concat(" come to ", *value_) : " overflow int64",
                      ", more than 2^44 = ", kMaxElements,
                      ", the most one process can address; lower model.n_layers, model.d_model, "
                      "model.n_routed_experts or model.d_expert");
    return *value_;
  }

 private:
  explicit Count(std::optional<int64_t> value) : value_(value) {}
  std::optional<int64_t> value_;
};

}  // namespace

ModelStats model_stats(const ModelConfig& c) {
  const Count d = c.d_model, f = c.d_expert;
  const Count attention = 4 * d * d;
  const Count dense_ffn = 3 * d * c.d_ff;
  const Count router = c.n_routed_experts * d;
  const Count shared = 3 * d * f * c.n_shared_experts;
  const Count expert = 3 * d * f;
  const Count head = c.vocab_size * d;
  const Count n_moe = Count(c.n_layers) - c.n_dense_layers;

  ModelStats s;
  // Matrices a token multiplies through (the embedding is a lookup: no FLOPs).
  const Count matmul_active = c.n_layers * attention + c.n_dense_layers * dense_ffn +
                              n_moe * (router + shared + c.top_k * expert) + head;
  const Count norms = d * (2 * Count(c.n_layers) + 1);
  s.params = (c.vocab_size * d + c.n_layers * attention + c.n_dense_layers * dense_ffn +
              n_moe * (router + shared + c.n_routed_experts * expert) + head + norms)
                 .within_limit("the parameters");
  const int64_t active_matmul = matmul_active.within_limit("the parameters a token multiplies by");
  s.active_params =
      (c.vocab_size * d + active_matmul + norms).within_limit("the active parameters");
  const double attention_core =
      2.0 * 2.0 * c.d_model * (c.seq_len + 1.0) / 2.0 * static_cast<double>(c.n_layers);
  s.flops_per_token = 3.0 * (2.0 * active_matmul + attention_core);
  return s;
}

}  // namespace tandem
