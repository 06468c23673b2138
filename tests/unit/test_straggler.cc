// StragglerDetector: a persistently slow rank is named after a window, one noisy step names no
// one, hysteresis keeps a named rank until it is clearly back, and the split is averaged.
#include <gtest/gtest.h>

#include <random>

#include "runtime/train/straggler_detector.h"

namespace tandem {
namespace {

std::vector<RankStepTimes> computes(const std::vector<double>& compute) {
  std::vector<RankStepTimes> out;
  for (double c : compute) out.push_back({c, 0.001, 0.002, 0.003});
  return out;
}

TEST(Median, OddEvenAndEmpty) {
  EXPECT_EQ(median({}), 0);
  EXPECT_EQ(median({3, 1, 2}), 2);
  EXPECT_EQ(median({4, 1, 3, 2}), 2.5);
}

TEST(StragglerDetector, NamesAPersistentlySlowRankAfterTheWindow) {
  StragglerDetector detector(4, 1.2, 5);
  for (int step = 1; step <= 4; ++step) {
    EXPECT_TRUE(detector.observe(computes({0.10, 0.10, 0.13, 0.10})).empty()) << step;
    EXPECT_FALSE(detector.verdict(2).straggler);
  }
  const auto changes = detector.observe(computes({0.10, 0.10, 0.13, 0.10}));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].rank, 2);
  EXPECT_TRUE(changes[0].named);
  EXPECT_NEAR(changes[0].verdict.ratio, 1.3, 1e-12);
  EXPECT_NEAR(changes[0].verdict.score, 1 / 1.3, 1e-12);
  EXPECT_NEAR(changes[0].mean.compute, 0.13, 1e-12);
  EXPECT_NEAR(changes[0].mean.sync_wait, 0.003, 1e-12);
  for (int r : {0, 1, 3}) {
    EXPECT_FALSE(detector.verdict(r).straggler);
    EXPECT_EQ(detector.verdict(r).score, 1);
  }
}

TEST(StragglerDetector, TwoRanksCompareWithTheOtherNotTheMean) {
  // Against the median of all (the mean of two) a 1.3x slower rank would show 1.13.
  StragglerDetector detector(2, 1.2, 3);
  for (int step = 0; step < 3; ++step) detector.observe(computes({0.10, 0.13}));
  EXPECT_TRUE(detector.verdict(1).straggler);
  EXPECT_FALSE(detector.verdict(0).straggler);
  EXPECT_NEAR(detector.verdict(0).ratio, 0.10 / 0.13, 1e-12);
}

TEST(StragglerDetector, OneNoisyStepNamesNobody) {
  StragglerDetector detector(4, 1.2, 5);
  for (int step = 0; step < 20; ++step) {
    const double noisy = step == 7 ? 0.5 : 0.10;  // one step 5x slower, once
    EXPECT_TRUE(detector.observe(computes({0.10, noisy, 0.10, 0.10})).empty()) << step;
  }
}

TEST(StragglerDetector, HysteresisClearsOnlyWhenClearlyBack) {
  StragglerDetector detector(3, 1.2, 3);
  for (int step = 0; step < 3; ++step) detector.observe(computes({0.10, 0.10, 0.125}));
  ASSERT_TRUE(detector.verdict(2).straggler);
  EXPECT_EQ(detector.clear_ratio(), 1.1);
  // 1.15x: below the naming ratio, above the clearing one: stays named.
  for (int step = 0; step < 10; ++step)
    EXPECT_TRUE(detector.observe(computes({0.10, 0.10, 0.115})).empty());
  EXPECT_TRUE(detector.verdict(2).straggler);
  // Back to speed: cleared once the window's median is.
  std::vector<StragglerChange> changes;
  for (int step = 0; step < 3 && changes.empty(); ++step)
    changes = detector.observe(computes({0.10, 0.10, 0.10}));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].named);
  EXPECT_EQ(changes[0].rank, 2);
  EXPECT_FALSE(detector.verdict(2).straggler);
}

TEST(StragglerDetector, NoiseAloneNamesNobodyOverManyRanksAndSeeds) {
  // Every rank's compute jitters by up to +-15% each step, independently: nobody is slow.
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u}) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<double> jitter(0.85, 1.15);
    StragglerDetector detector(16, 1.2, 20);
    for (int step = 0; step < 500; ++step) {
      std::vector<double> compute;
      for (int r = 0; r < 16; ++r) compute.push_back(0.1 * jitter(random));
      EXPECT_TRUE(detector.observe(computes(compute)).empty()) << "seed " << seed;
    }
  }
}

TEST(StragglerDetector, OneProcessHasNobodyToBeSlowerThan) {
  StragglerDetector detector(1, 1.2, 1);
  EXPECT_TRUE(detector.observe(computes({5.0})).empty());
  EXPECT_FALSE(detector.verdict(0).straggler);
  EXPECT_EQ(detector.verdict(0).score, 1);
}

}  // namespace
}  // namespace tandem
