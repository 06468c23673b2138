// The one walk of a chunk and of an MoE block: with the local exchange it gives bit for bit what
// the MoE sub-stages and the permutation kernels give called back to back by hand; it pauses
// wherever an exchange has rows in flight (and a task awaiting a task pauses with it), and two
// such walks interleaved give the numbers of one after the other; the time a runner sits blocked
// is booked to the operation that ended the wait; an evaluation keeps nothing and a backward after
// it is refused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/permute.h"
#include "parallelism/chunk_tasks.h"
#include "runtime/core/random.h"
#include "runtime/model/model_chunk.h"
#include "tests/unit/error_text.h"
#include "tests/unit/random_batch.h"

namespace tandem {
namespace {

ModelConfig walk_model() {
  ModelConfig c;
  c.vocab_size = 31;
  c.seq_len = 8;
  c.d_model = 16;
  c.n_layers = 3;
  c.n_dense_layers = 1;
  c.n_heads = 2;
  c.d_ff = 20;
  c.n_routed_experts = 6;
  c.n_shared_experts = 1;
  c.top_k = 2;
  c.d_expert = 12;
  c.init_std = 0.3;  // expert outputs of the size of x, so a misrouted row cannot hide
  return c;
}

using testing::Batch;
using testing::make_batch;

// Every element equal, not merely close.
void expect_identical(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.dtype(), DType::kF32) << what;
  for (int64_t i = 0; i < a.numel(); ++i)
    ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << what << " element " << i;
}

void expect_same_gradients(std::vector<Parameter*> a, std::vector<Parameter*> b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    expect_identical(a[i]->grad, b[i]->grad, a[i]->name);
    EXPECT_GT(kernels::sum_of_squares(a[i]->grad), 0.0) << a[i]->name << " got no gradient";
  }
}

// The single-rank MoE layer as it was composed before there was one walk: route, permute,
// experts, shared expert, weighted un-permutation; and its backward.
Tensor forward_by_hand(MoeFfnBlock& moe, const Tensor& x, MoeState& st) {
  moe.route(x, st);
  Tensor permuted = Tensor::empty({x.dim(0) * st.plan.top_k, x.dim(1)}, x.dtype());
  kernels::permute_rows(st.normed, st.plan, permuted);
  st.expert_out = moe.run_experts(permuted, st.plan.expert_offsets, st);
  moe.run_shared(st);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  kernels::unpermute_weighted(st.expert_out, st.gate_weights, st.plan, y);
  kernels::axpy(1.0, x, y);
  kernels::axpy(1.0, st.shared_out, y);
  return y;
}

Tensor backward_by_hand(MoeFfnBlock& moe, const Tensor& dy, MoeState& st) {
  const Tensor d_rows = moe.experts_backward(moe.unpermute_backward(dy, st), st);
  Tensor d_normed = Tensor::empty(dy.shape(), dy.dtype());
  kernels::permute_rows_backward(d_rows, st.plan, d_normed);
  return moe.route_backward(dy, d_normed, st);
}

class LocalWalk : public ::testing::TestWithParam<bool> {};  // FP8 off / on

TEST_P(LocalWalk, EqualsTheMoeSubStagesComposedByHand) {
  const ModelConfig c = walk_model();
  kernels::Fp8Stats stats_walk, stats_hand;
  Fp8Config fp8;
  fp8.enabled = GetParam();
  MoeFfnBlock walked(c, 1, DType::kF32, 5, Fp8Settings::from_config(fp8, &stats_walk));
  MoeFfnBlock by_hand(c, 1, DType::kF32, 5, Fp8Settings::from_config(fp8, &stats_hand));
  Tensor x = Tensor::empty({5 * c.seq_len, c.d_model}, DType::kF32);
  fill_normal(x, 1.0, 3, 1);
  Tensor dy = x.clone();
  fill_normal(dy, 1.0, 3, 2);

  std::unique_ptr<BlockState> state;
  const Tensor y = walked.forward(x, state);  // the walk with the local exchange
  MoeState reference;
  const Tensor expected = forward_by_hand(by_hand, x, reference);
  expect_identical(y, expected, "output");
  EXPECT_EQ(walked.expert_load(), by_hand.expert_load());

  const Tensor dx = walked.backward_input(dy, *state);
  const Tensor expected_dx = backward_by_hand(by_hand, dy, reference);
  expect_identical(dx, expected_dx, "input gradient");
  walked.backward_weight(*state);
  by_hand.backward_weight(reference);
  expect_same_gradients(walked.parameters(), by_hand.parameters());
  EXPECT_EQ(stats_walk.values, stats_hand.values);
  EXPECT_EQ(stats_walk.values > 0, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Fp8, LocalWalk, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "fp8" : "fp32"; });

// The local exchange, except that each movement stays in flight until the task has been found
// waiting for it once; it checks that the walk takes no result before its movement completed and
// that the shared expert has run whenever the dispatched rows are found still travelling.
class DelayedExchange final : public MoeExchange {
 public:
  struct Delay final : InFlight {
    int polls_left = 0;
    const MoeState* dispatching = nullptr;  // the block whose rows are on their way to the experts
    bool test() override {
      EXPECT_TRUE(dispatching == nullptr || dispatching->shared_out.defined())
          << "the shared expert should run while the dispatched rows travel";
      if (polls_left > 0) --polls_left;
      return polls_left == 0;
    }
    void wait() override { polls_left = 0; }
  };
  int started = 0;
  bool throw_at_combine = false;

  InFlight& start_plan(MoeFfnBlock& moe, MoeState& st) override {
    local_.start_plan(moe, st);
    return delayed();
  }
  InFlight& start_dispatch(MoeFfnBlock& moe, MoeState& st) override {
    local_.start_dispatch(moe, st);
    InFlight& in_flight = delayed();
    delay_.dispatching = &st;
    return in_flight;
  }
  ExpertRows received_rows(MoeFfnBlock& moe, MoeState& st) override {
    arrived();
    return local_.received_rows(moe, st);
  }
  InFlight& start_combine(MoeFfnBlock& moe, const Tensor& expert_out, MoeState& st) override {
    TANDEM_CHECK(!throw_at_combine, "combine failed on purpose");
    local_.start_combine(moe, expert_out, st);
    return delayed();
  }
  CombinedRows combined(MoeState& st) override {
    arrived();
    return local_.combined(st);
  }
  InFlight& start_combine_backward(MoeFfnBlock& moe, const Tensor& dy, MoeState& st) override {
    local_.start_combine_backward(moe, dy, st);
    return delayed();
  }
  Tensor received_output_grads(MoeState& st) override {
    arrived();
    return local_.received_output_grads(st);
  }
  InFlight& start_dispatch_backward(MoeFfnBlock& moe, const Tensor& d_rows, MoeState& st) override {
    local_.start_dispatch_backward(moe, d_rows, st);
    return delayed();
  }
  Tensor received_token_grads(MoeState& st) override {
    arrived();
    return local_.received_token_grads(st);
  }

 private:
  InFlight& delayed() {
    ++started;
    delay_.dispatching = nullptr;
    delay_.polls_left = 2;  // the walk's own test, then one while it is paused
    return delay_;
  }
  void arrived() { TANDEM_CHECK(delay_.polls_left == 0, "a result taken while in flight"); }
  LocalMoeExchange local_;
  Delay delay_;
};

// Resumes a task whenever it can run; returns how many times it ran (1 + its pauses).
int run_counting(PhasedTask& task) {
  int runs = 0;
  while (!task.done()) {
    if (!task.runnable()) continue;
    task.resume();
    ++runs;
  }
  return runs;
}

TEST(ChunkWalk, PausesWhereRowsAreInFlightAndGivesTheLocalNumbers) {
  const ModelConfig c = walk_model();
  const int64_t moe_layers = c.n_layers - c.n_dense_layers;
  ModelChunk paused(c, 7, ChunkSpec::whole_model(c)), direct(c, 7, ChunkSpec::whole_model(c));
  const Batch batch = make_batch(3, c, 4);
  const Pass pass = Pass::train(1.0 / static_cast<double>(batch.tokens.numel()));

  MicroBatchState expected;
  direct.forward(batch.tokens, expected, &batch.targets, pass);
  const double expected_loss = expected.loss_sum;
  direct.backward_input(Tensor(), expected);
  direct.backward_weight(expected);

  DelayedExchange exchange;
  MicroBatchState state;
  Tensor unused, dx;
  PhasedTask forward =
      paused.forward_task(batch.tokens, state, &batch.targets, pass, &unused, exchange);
  EXPECT_EQ(run_counting(forward), 1 + 3 * moe_layers);  // counts, dispatch, combine
  EXPECT_EQ(state.loss_sum, expected_loss);
  // Weights in the gaps: every block's weight gradients run inside the task, and each block is
  // reported once, last first, after its last one.
  std::vector<size_t> reported;
  PhasedTask backward = paused.backward_task(Tensor(), state, &dx, exchange, true,
                                             [&](size_t block) { reported.push_back(block); });
  EXPECT_EQ(run_counting(backward), 1 + 2 * moe_layers);  // the two movements back
  EXPECT_EQ(exchange.started, 5 * moe_layers);
  std::vector<size_t> last_first;
  for (size_t b = paused.blocks().size() + 1; b-- > 0;) last_first.push_back(b);
  EXPECT_EQ(reported, last_first);
  expect_same_gradients(paused.parameters(), direct.parameters());
  paused.backward_weight(state);  // nothing left to run
  expect_same_gradients(paused.parameters(), direct.parameters());
}

TEST(ChunkWalk, InterleavedForwardAndBackwardGiveTheNumbersOfOneAfterTheOther) {
  const ModelConfig c = walk_model();
  ModelChunk interleaved(c, 9, ChunkSpec::whole_model(c)),
      sequential(c, 9, ChunkSpec::whole_model(c));
  const Batch a = make_batch(2, c, 5), b = make_batch(2, c, 6);
  const Pass pass = Pass::train(1.0 / static_cast<double>(2 * a.tokens.numel()));

  MicroBatchState sa, sb;
  sequential.forward(a.tokens, sa, &a.targets, pass);
  sequential.forward(b.tokens, sb, &b.targets, pass);
  const double loss_b = sb.loss_sum;
  sequential.backward_input(Tensor(), sa);
  sequential.backward_weight(sa);
  sequential.backward_input(Tensor(), sb);
  sequential.backward_weight(sb);

  // As the executor runs an F&B pair: b's forward with a's backward, on separate exchanges.
  DelayedExchange forward_exchange, backward_exchange;
  MicroBatchState ia, ib;
  Tensor unused, dx;
  interleaved.forward_task(a.tokens, ia, &a.targets, pass, &unused, forward_exchange).run_to_end();
  PhasedTask forward =
      interleaved.forward_task(b.tokens, ib, &b.targets, pass, &unused, forward_exchange);
  PhasedTask backward = interleaved.backward_task(Tensor(), ia, &dx, backward_exchange, true);
  run_interleaved(forward, backward);
  EXPECT_EQ(ib.loss_sum, loss_b);
  interleaved.backward_weight(ia);
  interleaved.backward_task(Tensor(), ib, &dx, backward_exchange).run_to_end();
  interleaved.backward_weight(ib);
  expect_same_gradients(interleaved.parameters(), sequential.parameters());
}

// Completes on its `ready_after`-th test (or on wait); keeps what a runner books to it.
struct CountedOperation final : InFlight {
  int ready_after = 0, tests = 0;
  double exposed_seconds = 0;
  bool test() override { return ++tests >= ready_after; }
  void wait() override { tests = ready_after; }
  void add_exposed_seconds(double seconds) override { exposed_seconds += seconds; }
};

PhasedTask waits_for(CountedOperation& op) {
  co_await until_done{op};
}

TEST(PhasedTask, BlockedTimeIsBookedToTheOperationThatEndedTheWait) {
  // a's operation completes first (after 50 polls of each task), then b's (after 200): the first
  // wait is a's alone, the second, with a done, b's alone; together they are what the runner
  // reports blocked.
  CountedOperation first, second;
  first.ready_after = 50;
  second.ready_after = 200;
  PhasedTask a = waits_for(first), b = waits_for(second);
  const double blocked = run_interleaved(a, b);
  EXPECT_GT(first.exposed_seconds, 0);
  EXPECT_GT(second.exposed_seconds, 0);
  EXPECT_NEAR(first.exposed_seconds + second.exposed_seconds, blocked, 1e-9);
  // Alone, a task books what it blocks on (wait() returns at once here, so only a little).
  CountedOperation alone;
  alone.ready_after = 1000;
  PhasedTask c = waits_for(alone);
  const double alone_blocked = c.run_to_end();
  EXPECT_GT(alone_blocked, 0);
  EXPECT_NEAR(alone_blocked, alone.exposed_seconds, 1e-12);
}

TEST(ChunkWalk, AnErrorInsideTheMoeWalkReachesWhoRunsTheChunk) {
  const ModelConfig c = walk_model();
  ModelChunk chunk(c, 7, ChunkSpec::whole_model(c));
  const Batch batch = make_batch(1, c, 4);
  DelayedExchange exchange;
  exchange.throw_at_combine = true;
  MicroBatchState state;
  Tensor unused;
  PhasedTask task =
      chunk.forward_task(batch.tokens, state, &batch.targets, Pass::evaluate(), &unused, exchange);
  EXPECT_NE(testing::error_of([&] { task.run_to_end(); }).find("combine failed on purpose"),
            std::string::npos);
  EXPECT_TRUE(task.done());
}

TEST(Evaluation, KeepsNothingAndRefusesABackward) {
  const ModelConfig c = walk_model();
  ModelChunk model(c, 3, ChunkSpec::whole_model(c));
  const Batch batch = make_batch(2, c, 8);
  MicroBatchState trained, evaluated;
  model.forward(batch.tokens, trained, &batch.targets, Pass::train(1.0));
  model.forward(batch.tokens, evaluated, &batch.targets, Pass::evaluate());
  EXPECT_EQ(evaluated.loss_sum, trained.loss_sum);
  EXPECT_EQ(trained.blocks.size(), model.blocks().size());
  EXPECT_TRUE(evaluated.blocks.empty());
  EXPECT_EQ(evaluated.head, nullptr);
  EXPECT_TRUE(evaluated.evaluated);

  const std::string refused = "backward after an evaluation forward";
  EXPECT_NE(testing::error_of([&] { model.backward_input(Tensor(), evaluated); }).find(refused),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { model.backward_weight(evaluated); }).find("evaluation"),
            std::string::npos);
  Tensor dx;
  EXPECT_NE(testing::error_of([&] {
              parallel::backward_task(model, Tensor(), evaluated, &dx, {}).run_to_end();
            }).find(refused),
            std::string::npos);
  for (Parameter* p : model.parameters())
    EXPECT_EQ(kernels::sum_of_squares(p->grad), 0.0) << p->name << " changed by a refused backward";

  // The same state trained again is a training state: nothing of the evaluation is left over.
  model.forward(batch.tokens, evaluated, &batch.targets, Pass::train(1.0));
  EXPECT_FALSE(evaluated.evaluated);
  model.backward_input(Tensor(), evaluated);
}

TEST(Evaluation, APipelineStageWithoutTheHeadKeepsNothingEither) {
  const ModelConfig c = walk_model();
  ModelChunk stage(c, 3, ChunkSpec{0, 2, true, false, {}});
  const Batch batch = make_batch(2, c, 8);
  MicroBatchState trained, evaluated;
  const Tensor trained_out = stage.forward(batch.tokens, trained, nullptr, Pass::train(1.0));
  Tensor evaluated_out;
  parallel::forward_task(stage, batch.tokens, evaluated, nullptr, Pass::evaluate(), &evaluated_out,
                         {})
      .run_to_end();
  expect_identical(evaluated_out, trained_out, "stage output");
  EXPECT_FALSE(trained.blocks.empty());
  EXPECT_TRUE(evaluated.blocks.empty());
  EXPECT_TRUE(evaluated.evaluated);
}

TEST(Evaluation, TrainingNeedsAPositiveLossScale) {
  EXPECT_NE(testing::error_of([] { Pass::train(0.0); }).find("Pass::evaluate()"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] { Pass::evaluate().grad_scale(); }).find("no loss scale"),
            std::string::npos);
  EXPECT_EQ(Pass::train(0.25).grad_scale(), 0.25);
}

}  // namespace
}  // namespace tandem
