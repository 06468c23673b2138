// AdamW (the kernel and the optimizer over parameter slices), clipping and the learning-rate
// schedule against their published formulas, written out independently here in double precision;
// and the optimizer's shards and named moments against the whole.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "kernels/optimizer.h"
#include "runtime/train/optimizer.h"
#include "tests/unit/grad_check.h"
#include "tests/unit/training_state_copy.h"

namespace tandem {
namespace {

using testing::same_bits;

TEST(AdamW, MatchesTheFormulaOverSeveralSteps) {
  Tensor p = testing::random_tensor({5}, 1), m = Tensor::zeros({5}, DType::kF64);
  Tensor v = Tensor::zeros({5}, DType::kF64);
  std::vector<double> ref(p.data<double>(), p.data<double>() + 5), rm(5, 0), rv(5, 0);
  const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  for (int64_t step = 1; step <= 4; ++step) {
    Tensor g = testing::random_tensor({5}, 100 + step);
    kernels::adamw_update(p, g, m, v, {lr, b1, b2, eps, wd, step});
    for (int i = 0; i < 5; ++i) {
      const double gi = g.data<double>()[i];
      rm[i] = b1 * rm[i] + (1 - b1) * gi;
      rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
      const double mhat = rm[i] / (1 - std::pow(b1, step));
      const double vhat = rv[i] / (1 - std::pow(b2, step));
      ref[i] -= lr * wd * ref[i];  // decoupled decay, on the pre-update weight
      ref[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(p.data<double>()[i], ref[i], 1e-14);
}

TEST(AdamW, FirstStepMovesByLearningRateTimesSign) {
  // With bias correction, step 1 moves each weight by lr·g/|g| (up to eps), whatever |g| is.
  Tensor p = Tensor::zeros({3}, DType::kF32), m = p.clone(), v = p.clone();
  Tensor g = Tensor::empty({3}, DType::kF32);
  g.data<float>()[0] = 1e-3f, g.data<float>()[1] = -50.f, g.data<float>()[2] = 7.f;
  kernels::adamw_update(p, g, m, v, {0.1, 0.9, 0.999, 1e-12, 0.0, 1});
  EXPECT_NEAR(p.data<float>()[0], -0.1f, 1e-6);
  EXPECT_NEAR(p.data<float>()[1], 0.1f, 1e-6);
  EXPECT_NEAR(p.data<float>()[2], -0.1f, 1e-6);
}

// Two fp32 parameters, one decayed (a matrix) and one not (a gain), as a model holds them.
struct TwoParameters {
  Parameter matrix, gain;
  TwoParameters() {
    matrix = make_parameter("layers.0.ffn.w13", ParameterRole::kDense, {4, 5}, DType::kF32, 0.5, 3);
    gain = make_parameter("layers.0.ffn.norm", ParameterRole::kDense, {7}, DType::kF32, 0.5, 3,
                          /*decay=*/false);
  }
  std::vector<Parameter*> all() { return {&matrix, &gain}; }
};

// Elements [begin, end) of a parameter, through views of its own tensors.
ParameterSlice slice_of(Parameter& p, int64_t begin, int64_t end) {
  const int64_t n = p.value.numel();
  return {&p, begin, end, p.value.reshape({n}).rows(begin, end),
          p.grad.reshape({n}).rows(begin, end)};
}

// Step s's gradient of a parameter: the same for every copy of the model.
void set_gradient(Parameter& p, int64_t step) {
  Tensor g = testing::random_tensor(p.value.shape(), 1000 * step + p.value.numel(), 2.0);
  for (int64_t i = 0; i < g.numel(); ++i)
    p.grad.data<float>()[i] = static_cast<float>(g.data<double>()[i]);
}

TrainConfig adamw_config() {
  TrainConfig c;
  c.beta1 = 0.9;
  c.beta2 = 0.95;
  c.adam_eps = 1e-8;
  c.weight_decay = 0.1;
  return c;
}

constexpr int kSteps = 5;
// Clipping on some steps, by different factors: Adam is invariant to one constant scale of every
// gradient, not to a scale that changes from step to step, so a lost clip shows.
constexpr double kClip[kSteps] = {1.0, 0.25, 1.0, 0.6, 0.1};
constexpr double kLr[kSteps] = {0.01, 0.02, 0.02, 0.015, 0.005};

TEST(AdamWOptimizer, WholeAndShardedSlicesFollowThePublishedUpdateAndShardsEqualTheWhole) {
  const TrainConfig config = adamw_config();
  TwoParameters whole, sharded;
  // Double-precision reference of Loshchilov & Hutter's AdamW: decoupled decay on the pre-update
  // weight, bias-corrected moments of the clipped gradient.
  std::vector<std::vector<double>> ref, rm, rv;
  for (Parameter* p : whole.all()) {
    ref.emplace_back(p->value.data<float>(), p->value.data<float>() + p->value.numel());
    rm.emplace_back(p->value.numel(), 0.0);
    rv.emplace_back(p->value.numel(), 0.0);
  }
  AdamW full({ParameterSlice::whole(whole.matrix), ParameterSlice::whole(whole.gain)}, config);
  // Two ranks' shards of the same two parameters laid end to end (20 + 7 elements, 14 each): the
  // first holds the matrix's first 14 elements, the second its last 6 and the whole gain.
  AdamW shard0({slice_of(sharded.matrix, 0, 14)}, config);
  AdamW shard1({slice_of(sharded.matrix, 14, 20), slice_of(sharded.gain, 0, 7)}, config);
  for (int64_t step = 1; step <= kSteps; ++step) {
    const double lr = kLr[step - 1], clip = kClip[step - 1];
    for (TwoParameters* copy : {&whole, &sharded})
      for (Parameter* p : copy->all()) set_gradient(*p, step);
    for (size_t k = 0; k < 2; ++k) {
      const Parameter& p = *whole.all()[k];
      const double wd = p.decay ? config.weight_decay : 0.0;
      for (int64_t i = 0; i < p.value.numel(); ++i) {
        const double g = double(p.grad.data<float>()[i]) * clip;
        rm[k][i] = config.beta1 * rm[k][i] + (1 - config.beta1) * g;
        rv[k][i] = config.beta2 * rv[k][i] + (1 - config.beta2) * g * g;
        const double mhat = rm[k][i] / (1 - std::pow(config.beta1, step));
        const double vhat = rv[k][i] / (1 - std::pow(config.beta2, step));
        ref[k][i] =
            ref[k][i] - lr * wd * ref[k][i] - lr * mhat / (std::sqrt(vhat) + config.adam_eps);
      }
    }
    full.step(lr, clip);
    shard0.step(lr, clip);
    shard1.step(lr, clip);
  }
  EXPECT_EQ(full.steps_taken(), kSteps);
  for (size_t k = 0; k < 2; ++k) {
    const Parameter& p = *whole.all()[k];
    // fp32 storage: each of the 5 steps rounds weights of size ~1 to 2^-24 relative (measured:
    // at most 7e-8 from the reference).
    for (int64_t i = 0; i < p.value.numel(); ++i)
      EXPECT_NEAR(p.value.data<float>()[i], ref[k][i], 3e-7) << p.name << "[" << i << "]";
    EXPECT_TRUE(same_bits(p.value, sharded.all()[k]->value)) << p.name;
  }
  // The moments too: the shards' m and v, concatenated, are the whole's bit for bit.
  const auto m_full = full.moments(), m0 = shard0.moments(), m1 = shard1.moments();
  ASSERT_EQ(m_full.size(), 2u);
  ASSERT_EQ(m0.size(), 1u);
  ASSERT_EQ(m1.size(), 2u);
  EXPECT_EQ(m0[0].name, "layers.0.ffn.w13");
  EXPECT_EQ(m0[0].shape, (Shape{4, 5}));
  EXPECT_EQ(m0[0].begin, 0);
  EXPECT_EQ(m0[0].end, 14);
  EXPECT_EQ(m1[0].begin, 14);
  EXPECT_EQ(m1[0].end, 20);
  EXPECT_TRUE(same_bits(m_full[0].m.rows(0, 14), m0[0].m));
  EXPECT_TRUE(same_bits(m_full[0].v.rows(14, 20), m1[0].v));
  EXPECT_TRUE(same_bits(m_full[1].m, m1[1].m));
  EXPECT_TRUE(same_bits(m_full[1].v, m1[1].v));
  EXPECT_EQ(full.state_elements(), 2 * 27);
  EXPECT_EQ(shard0.state_elements() + shard1.state_elements(), 2 * 27);
}

// What a checkpoint gives a run on another grid: the whole optimizer's moments and step count
// after 3 steps, loaded into two shards, continue exactly as the whole does.
TEST(AdamWOptimizer, MomentsSavedWholeLoadIntoShardsByName) {
  const TrainConfig config = adamw_config();
  TwoParameters whole, sharded;
  AdamW full({ParameterSlice::whole(whole.matrix), ParameterSlice::whole(whole.gain)}, config);
  for (int64_t step = 1; step <= 3; ++step) {
    for (Parameter* p : whole.all()) set_gradient(*p, step);
    full.step(kLr[step - 1], kClip[step - 1]);
  }
  for (size_t k = 0; k < 2; ++k) sharded.all()[k]->value.copy_from(whole.all()[k]->value);
  AdamW shard0({slice_of(sharded.matrix, 0, 14)}, config);
  AdamW shard1({slice_of(sharded.matrix, 14, 20), slice_of(sharded.gain, 0, 7)}, config);
  int64_t loaded = 0;
  for (AdamW* shard : {&shard0, &shard1}) {
    for (const AdamW::Moments& saved : full.moments()) {
      const bool held = saved.name == "layers.0.ffn.w13" || shard == &shard1;
      if (held) loaded += shard->set_moments(saved.name, saved.begin, saved.m, saved.v);
    }
    shard->set_steps_taken(full.steps_taken());
  }
  EXPECT_EQ(loaded, 27);
  // A saved shard that only partly meets a held slice loads the part they share.
  AdamW other({slice_of(sharded.matrix, 10, 20)}, config);
  const AdamW::Moments saved = full.moments()[0];
  EXPECT_EQ(other.set_moments(saved.name, 0, saved.m.rows(0, 14), saved.v.rows(0, 14)), 4);
  EXPECT_EQ(other.set_moments(saved.name, 0, saved.m.rows(0, 10), saved.v.rows(0, 10)), 0);
  EXPECT_TRUE(same_bits(other.moments()[0].m.rows(0, 4), saved.m.rows(10, 14)));
  EXPECT_THROW(other.set_moments("layers.0.ffn.norm", 0, saved.m, saved.v), Error);

  for (int64_t step = 4; step <= kSteps; ++step) {
    for (TwoParameters* copy : {&whole, &sharded})
      for (Parameter* p : copy->all()) set_gradient(*p, step);
    full.step(kLr[step - 1], kClip[step - 1]);
    shard0.step(kLr[step - 1], kClip[step - 1]);
    shard1.step(kLr[step - 1], kClip[step - 1]);
  }
  for (size_t k = 0; k < 2; ++k)
    EXPECT_TRUE(same_bits(whole.all()[k]->value, sharded.all()[k]->value)) << k;
}

TEST(Clipping, CoefficientBringsNormToTheLimit) {
  EXPECT_EQ(kernels::clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_EQ(kernels::clip_coefficient(5.0, 0.0), 1.0);  // 0 turns clipping off
  EXPECT_NEAR(kernels::clip_coefficient(4.0, 1.0) * 4.0, 1.0, 1e-6);
}

TEST(LearningRate, WarmupThenCosine) {
  const double lr = 1e-3, min_lr = 1e-4;
  EXPECT_NEAR(kernels::learning_rate_at(0, 100, 10, lr, min_lr), lr / 10, 1e-18);
  EXPECT_NEAR(kernels::learning_rate_at(9, 100, 10, lr, min_lr), lr, 1e-18);
  EXPECT_NEAR(kernels::learning_rate_at(10, 100, 10, lr, min_lr), lr, 1e-18);
  EXPECT_NEAR(kernels::learning_rate_at(55, 100, 10, lr, min_lr), (lr + min_lr) / 2, 1e-15);
  EXPECT_NEAR(kernels::learning_rate_at(100, 100, 10, lr, min_lr), min_lr, 1e-15);
  const double quarter = min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(std::numbers::pi / 4));
  EXPECT_NEAR(kernels::learning_rate_at(35, 110, 10, lr, min_lr), quarter, 1e-15);
  for (int64_t s = 10; s < 100; ++s)
    EXPECT_GE(kernels::learning_rate_at(s, 100, 10, lr, min_lr),
              kernels::learning_rate_at(s + 1, 100, 10, lr, min_lr));
}

}  // namespace
}  // namespace tandem
