// The whole model: gradients of every kind of parameter against finite differences in fp64,
// deferred weight gradients equal immediate ones, fp32 agrees with fp64, and the parameter count.
#include <gtest/gtest.h>

#include <map>
#include <optional>

#include "kernels/elementwise.h"
#include "runtime/model/model_chunk.h"
#include "runtime/model/model_stats.h"
#include "tests/unit/error_text.h"
#include "tests/unit/grad_check.h"
#include "tests/unit/random_batch.h"

namespace tandem {
namespace {

ModelConfig small_model(DType dtype) {
  ModelConfig c;
  c.vocab_size = 29;
  c.seq_len = 6;
  c.d_model = 12;
  c.n_layers = 3;
  c.n_dense_layers = 1;
  c.n_heads = 2;
  c.d_ff = 10;
  c.n_routed_experts = 5;
  c.n_shared_experts = 1;
  c.top_k = 2;
  c.d_expert = 7;
  c.init_std = 0.3;  // large enough that every layer matters to the loss
  c.dtype = dtype;
  return c;
}

using testing::Batch;
using testing::make_batch;

double mean_loss(ModelChunk& model, const Batch& b) {
  MicroBatchState state;
  model.forward(b.tokens, state, &b.targets, Pass::evaluate());
  return state.loss_sum / static_cast<double>(b.tokens.numel());
}

void accumulate_gradients(ModelChunk& model, const Batch& b, double grad_scale) {
  MicroBatchState state;
  model.forward(b.tokens, state, &b.targets, Pass::train(grad_scale));
  model.backward_input(Tensor(), state);
  model.backward_weight(state);
}

TEST(Model, EveryParameterKindMatchesFiniteDifferences) {
  const ModelConfig c = small_model(DType::kF64);
  ModelChunk model(c, 42, ChunkSpec::whole_model(c));
  const Batch batch = make_batch(3, c, 7);
  for (MoeFfnBlock* moe : model.moe_blocks()) moe->reset_expert_load();
  accumulate_gradients(model, batch, 1.0 / batch.tokens.numel());
  // Tokens each routed expert received in that forward. An expert that received none has a zero
  // gradient and a zero finite difference, a check that passes whatever the backward does; so it
  // must be exactly zero, and every layer must also have experts that did receive tokens, whose
  // nonzero gradients are checked.
  std::map<std::string, int64_t> tokens_of;  // "layers.2.ffn.experts.4." → tokens
  for (MoeFfnBlock* moe : model.moe_blocks())
    for (int64_t x = 0; x < moe->n_experts(); ++x)
      tokens_of[moe->name() + ".experts." + std::to_string(x) + "."] = moe->expert_load()[x];
  auto tokens_for = [&](const std::string& name) -> std::optional<int64_t> {
    for (const auto& [prefix, tokens] : tokens_of)
      if (name.rfind(prefix, 0) == 0) return tokens;
    return std::nullopt;
  };
  std::map<std::string, double> errors;
  std::map<std::string, int> checked_experts_with_tokens;  // per MoE layer
  for (Parameter* p : model.parameters()) {
    const std::optional<int64_t> tokens = tokens_for(p->name);
    if (tokens && *tokens == 0) {
      EXPECT_EQ(kernels::sum_of_squares(p->grad), 0.0) << p->name << " received no tokens";
      continue;
    }
    EXPECT_GT(kernels::sum_of_squares(p->grad), 0.0) << p->name;
    // A few entries of every parameter; the loss is the mean cross-entropy.
    const double error = testing::gradient_error(
        p->value, p->grad, [&] { return mean_loss(model, batch); }, 1e-6, 6);
    errors[p->name] = error;
    EXPECT_LT(error, 1e-5) << p->name;
    if (tokens && p->name.ends_with(".w13"))  // one per expert (w2 is its other matrix)
      ++checked_experts_with_tokens[p->name.substr(0, p->name.find(".ffn."))];
  }
  for (MoeFfnBlock* moe : model.moe_blocks()) {
    const std::string layer = moe->name().substr(0, moe->name().find(".ffn"));
    EXPECT_GE(checked_experts_with_tokens[layer], 2 * c.top_k) << layer;
  }
  // The check covered every kind: embedding, attention, dense FFN, router, shared and routed
  // experts, norms, head.
  for (const char* name :
       {"embedding.weight", "layers.0.attention.wqkv", "layers.0.ffn.w13", "layers.1.ffn.router",
        "layers.2.ffn.shared.w2", "layers.1.attention.norm", "head.weight", "head.norm"})
    EXPECT_TRUE(errors.count(name)) << name;
}

TEST(Model, DeferredWeightGradientsEqualImmediateOnes) {
  const ModelConfig c = small_model(DType::kF32);
  ModelChunk immediate(c, 3, ChunkSpec::whole_model(c)), deferred(c, 3, ChunkSpec::whole_model(c));
  const Batch a = make_batch(2, c, 11), b = make_batch(2, c, 12);
  const double scale = 1.0 / (2 * a.tokens.numel());
  // F B W per micro-batch...
  accumulate_gradients(immediate, a, scale);
  accumulate_gradients(immediate, b, scale);
  // ...against F F B B, then every W at the end, as zero-bubble schedules run them.
  MicroBatchState sa, sb;
  deferred.forward(a.tokens, sa, &a.targets, Pass::train(scale));
  deferred.forward(b.tokens, sb, &b.targets, Pass::train(scale));
  deferred.backward_input(Tensor(), sa);
  deferred.backward_input(Tensor(), sb);
  for (Parameter* p : deferred.parameters())
    EXPECT_EQ(kernels::sum_of_squares(p->grad), 0.0) << p->name << " changed before W";
  deferred.backward_weight(sa);
  deferred.backward_weight(sb);
  auto pi = immediate.parameters(), pd = deferred.parameters();
  ASSERT_EQ(pi.size(), pd.size());
  for (size_t i = 0; i < pi.size(); ++i) {
    Tensor diff = pd[i]->grad.clone();
    kernels::axpy(-1.0, pi[i]->grad, diff);
    EXPECT_EQ(kernels::sum_of_squares(diff), 0.0) << pi[i]->name;
    EXPECT_GT(kernels::sum_of_squares(pi[i]->grad), 0.0) << pi[i]->name;
  }
}

TEST(Model, Fp32AgreesWithFp64AndInitIsDeterministic) {
  const ModelConfig c64 = small_model(DType::kF64), c32 = small_model(DType::kF32);
  ModelChunk m64(c64, 5, ChunkSpec::whole_model(c64)), m32(c32, 5, ChunkSpec::whole_model(c32));
  const Batch batch = make_batch(4, c64, 9);
  EXPECT_NEAR(mean_loss(m32, batch), mean_loss(m64, batch), 1e-5);
  ModelChunk again(c32, 5, ChunkSpec::whole_model(c32)), other(c32, 6, ChunkSpec::whole_model(c32));
  EXPECT_EQ(mean_loss(again, batch), mean_loss(m32, batch));
  EXPECT_NE(mean_loss(other, batch), mean_loss(m32, batch));
}

TEST(Model, ChunksBuildTheSameParametersAsTheWholeModel) {
  // Initialisation depends on (seed, name) only, so a pipeline stage owning layers [1, 3) holds
  // exactly the weights the single-process model has for them.
  const ModelConfig c = small_model(DType::kF32);
  ModelChunk whole(c, 8, ChunkSpec::whole_model(c)), tail(c, 8, ChunkSpec{1, 3, false, true, {}});
  std::map<std::string, Parameter*> by_name;
  for (Parameter* p : whole.parameters()) by_name[p->name] = p;
  for (Parameter* p : tail.parameters()) {
    ASSERT_TRUE(by_name.count(p->name)) << p->name;
    Tensor diff = p->value.clone();
    kernels::axpy(-1.0, by_name[p->name]->value, diff);
    EXPECT_EQ(kernels::sum_of_squares(diff), 0.0) << p->name;
  }
}

// The one place a parameter's name is read for its role: every parameter of a model with dense
// and MoE layers, shared experts and an expert-parallel slice has the role its name describes.
TEST(Model, EveryParameterHasTheRoleItsNameSays) {
  const ModelConfig c = small_model(DType::kF32);
  ModelChunk whole(c, 8, ChunkSpec::whole_model(c));
  ModelChunk expert_slice(c, 8, ChunkSpec{1, 3, false, true, {1, 5}});
  std::map<ParameterRole, int> count;
  for (ModelChunk* model : {&whole, &expert_slice}) {
    for (Parameter* p : model->parameters()) {
      const std::string& n = p->name;
      const bool router = n.size() > 7 && n.compare(n.size() - 7, 7, ".router") == 0;
      const ParameterRole expected =
          n.find(".experts.") != std::string::npos  ? ParameterRole::kRoutedExpert
          : n.find(".shared.") != std::string::npos ? ParameterRole::kSharedExpert
          : router                                  ? ParameterRole::kRouter
                                                    : ParameterRole::kDense;
      EXPECT_EQ(p->role, expected) << n;
      ++count[p->role];
    }
  }
  // Two MoE layers in each chunk: 5 experts × (w13, w2) in the whole model, 1 × 2 in the slice.
  EXPECT_EQ(count[ParameterRole::kRoutedExpert], 2 * 5 * 2 + 2 * 1 * 2);
  EXPECT_EQ(count[ParameterRole::kSharedExpert], 2 * 2 + 2 * 2);
  EXPECT_EQ(count[ParameterRole::kRouter], 2 + 2);
  EXPECT_GT(count[ParameterRole::kDense], 0);
}

TEST(Model, ParameterCountMatchesTheBuiltModel) {
  const ModelConfig c = small_model(DType::kF32);
  ModelChunk model(c, 1, ChunkSpec::whole_model(c));
  int64_t total = 0;
  for (Parameter* p : model.parameters()) total += p->value.numel();
  EXPECT_EQ(model_stats(c).params, total);
  // Active parameters: all but the (E − k) unused experts of each MoE layer.
  const int64_t unused =
      (c.n_layers - c.n_dense_layers) * (c.n_routed_experts - c.top_k) * 3 * c.d_model * c.d_expert;
  EXPECT_EQ(model_stats(c).active_params, total - unused);
}

// Each tensor of the model can be addressable while all layers together are not: the count is
// refused, not wrapped around or printed wrong.
TEST(Model, ParameterCountPastWhatAProcessAddressesIsRefused) {
  ModelConfig c;
  c.n_layers = 4000000000;
  const std::string e = testing::error_of([&] { model_stats(c); });
  EXPECT_EQ(e.rfind("model: the parameters come to ", 0), 0u) << e;
  EXPECT_NE(e.find(", more than 2^44 = 17592186044416"), std::string::npos) << e;
  c.n_layers = int64_t{1} << 60;
  EXPECT_NE(testing::error_of([&] { model_stats(c); }).find("model: the parameters overflow int64"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem
