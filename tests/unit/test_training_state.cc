// The training state by name: N steps, the state copied out (parameters, router biases, AdamW
// moments, step count) and loaded into a fresh engine, then M more steps, give the bits of N + M
// steps run straight through; and each part of the state is needed for that.
#include <gtest/gtest.h>

#include <fstream>

#include "runtime/train/trainer.h"
#include "tests/unit/training_state_copy.h"

namespace tandem {
namespace {

Config small_run() {
  Config c;
  c.model.vocab_size = 256;
  c.model.seq_len = 16;
  c.model.d_model = 32;
  c.model.n_layers = 3;
  c.model.n_dense_layers = 1;
  c.model.n_heads = 2;
  c.model.d_ff = 48;
  c.model.n_routed_experts = 4;
  c.model.n_shared_experts = 1;
  c.model.top_k = 2;
  c.model.d_expert = 16;
  c.model.router_bias_update_rate = 0.01;  // biases that move visibly from step to step
  c.train.steps = 6;
  c.train.batch_size = 4;
  c.train.warmup_steps = 2;
  c.train.lr = 3e-3;
  c.train.min_lr = 3e-4;
  c.train.grad_clip = 0.5;  // clips on some steps, so the norm and the clip are on the path
  c.data.path = TANDEM_SOURCE_DIR "/data/kjv.txt";
  return c;
}

TEST(TrainingState, LoadedIntoAFreshEngineContinuesBitForBit) {
  const Config config = small_run();
  ASSERT_TRUE(std::ifstream(config.data.path).good())
      << config.data.path << " is missing: run scripts/prepare-data (make test does)";
  constexpr int64_t kFirst = 3, kTotal = 6;
  SingleProcessEngine straight(config);
  std::vector<double> losses;
  for (int64_t step = 0; step < kTotal; ++step) losses.push_back(straight.train_step(step).loss);
  const testing::SavedState expected = testing::save_state(straight);

  SingleProcessEngine first(config);
  for (int64_t step = 0; step < kFirst; ++step) first.train_step(step);
  const testing::SavedState saved = testing::save_state(first);
  EXPECT_EQ(saved.steps_taken, kFirst);
  EXPECT_EQ(saved.buffers.count("layers.2.ffn.router_bias"), 1u);
  EXPECT_EQ(saved.moments.count("layers.2.ffn.experts.3.w2"), 1u);
  EXPECT_EQ(saved.moments.size(), saved.parameters.size());

  auto resumed = [&](testing::LoadParts parts) {
    SingleProcessEngine engine(config);
    testing::load_state(saved, engine, parts);
    for (int64_t step = kFirst; step < kTotal; ++step) {
      const double loss = engine.train_step(step).loss;
      if (parts.parameters && parts.buffers && parts.moments) {
        EXPECT_EQ(loss, losses[step]) << step;
      }
    }
    return testing::save_state(engine);
  };
  const std::vector<std::string> differ = testing::differences(expected, resumed({}));
  EXPECT_TRUE(differ.empty()) << differ.size() << " tensors differ, the first " << differ[0];
  // Each part matters: a continuation without it ends elsewhere.
  EXPECT_FALSE(testing::differences(expected, resumed({false, true, true})).empty());
  EXPECT_FALSE(testing::differences(expected, resumed({true, false, true})).empty());
  EXPECT_FALSE(testing::differences(expected, resumed({true, true, false})).empty());
}

TEST(TrainingState, StepsRunInOrderFromTheResumedCount) {
  const Config config = small_run();
  SingleProcessEngine engine(config);
  EXPECT_THROW(engine.train_step(3), Error);  // a resume that forgot set_steps_taken
  engine.set_steps_taken(3);
  EXPECT_NO_THROW(engine.train_step(3));
  EXPECT_EQ(engine.state().steps_taken, 4);
}

}  // namespace
}  // namespace tandem
