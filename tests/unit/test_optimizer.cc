// AdamW, clipping and the learning-rate schedule against their published formulas, written out
// independently here in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "kernels/optimizer.h"
#include "tests/unit/grad_check.h"

namespace tandem {
namespace {

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
