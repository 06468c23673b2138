// Routing semantics (top-k on biased affinities, weights from unbiased ones), the permutation
// plan, and the auxiliary-loss-free bias update.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "kernels/permute.h"
#include "kernels/router.h"
#include "tests/unit/grad_check.h"

namespace tandem {
namespace {

using testing::random_tensor;

TEST(Router, TopKMatchesBruteForceAndBiasOnlySteersSelection) {
  const int64_t n = 31, e = 9, k = 3;
  Tensor logits = random_tensor({n, e}, 1), bias = random_tensor({e}, 2, 0.3);
  Tensor affinity = Tensor::empty({n, e}, DType::kF64), ids = Tensor::empty({n, k}, DType::kI32);
  Tensor w = Tensor::empty({n, k}, DType::kF64);
  kernels::router_forward(logits, bias, k, affinity, ids, w);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int> order(e);
    std::iota(order.begin(), order.end(), 0);
    auto score = [&](int x) {
      return 1 / (1 + std::exp(-logits.data<double>()[i * e + x])) + bias.data<double>()[x];
    };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score(a) > score(b); });
    double total = 0;
    for (int j = 0; j < k; ++j) total += affinity.data<double>()[i * e + order[j]];
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(ids.data<int32_t>()[i * k + j], order[j]);
      // Gate weights use the unbiased affinities, normalised over the selected experts.
      EXPECT_NEAR(w.data<double>()[i * k + j], affinity.data<double>()[i * e + order[j]] / total,
                  1e-15);
    }
  }
}

TEST(Router, LargeBiasForcesAnExpert) {
  const int64_t n = 5, e = 4, k = 1;
  Tensor logits = random_tensor({n, e}, 3), bias = Tensor::zeros({e}, DType::kF64);
  bias.data<double>()[2] = 10.0;
  Tensor affinity = Tensor::empty({n, e}, DType::kF64), ids = Tensor::empty({n, k}, DType::kI32);
  Tensor w = Tensor::empty({n, k}, DType::kF64);
  kernels::router_forward(logits, bias, k, affinity, ids, w);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(ids.data<int32_t>()[i], 2);
    EXPECT_DOUBLE_EQ(w.data<double>()[i], 1.0);
  }
}

TEST(Router, NodeLimitedRoutingStaysWithinMaxGroups) {
  // 16 experts on 4 nodes (groups of 4), top-4, at most 2 nodes per token.
  const int64_t n = 200, e = 16, k = 4;
  Tensor logits = random_tensor({n, e}, 5, 2.0), bias = random_tensor({e}, 6, 0.1);
  Tensor affinity = Tensor::empty({n, e}, DType::kF64), ids = Tensor::empty({n, k}, DType::kI32);
  Tensor w = Tensor::empty({n, k}, DType::kF64), unlimited_ids = ids.clone();
  kernels::router_forward(logits, bias, k, affinity, unlimited_ids, w);
  kernels::router_forward(logits, bias, k, affinity, ids, w, {4, 2});
  int64_t unlimited_spread = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::set<int> nodes, free_nodes;
    for (int64_t j = 0; j < k; ++j) {
      nodes.insert(ids.data<int32_t>()[i * k + j] / 4);
      free_nodes.insert(unlimited_ids.data<int32_t>()[i * k + j] / 4);
    }
    EXPECT_LE(nodes.size(), 2u);
    unlimited_spread += free_nodes.size() > 2;
    // Gate weights still sum to one over the chosen experts.
    double total = 0;
    for (int64_t j = 0; j < k; ++j) total += w.data<double>()[i * k + j];
    EXPECT_NEAR(total, 1.0, 1e-12);
  }
  EXPECT_GT(unlimited_spread, 0);  // without the limit, tokens do reach more nodes
}

TEST(Router, BiasUpdateMovesTowardBalance) {
  Tensor bias = Tensor::zeros({4}, DType::kF32);
  kernels::update_router_bias({10, 2, 4, 4}, 0.01, bias);  // mean 5
  const float* b = bias.data<float>();
  EXPECT_FLOAT_EQ(b[0], -0.01f);  // overloaded: less likely to be chosen
  EXPECT_FLOAT_EQ(b[1], 0.01f);
  EXPECT_FLOAT_EQ(b[2], 0.01f);
  std::vector<int64_t> load(4, 0);
  Tensor ids = Tensor::empty({3, 2}, DType::kI32);
  const int32_t values[6] = {0, 1, 0, 3, 0, 1};
  std::copy(values, values + 6, ids.data<int32_t>());
  kernels::count_expert_load(ids, load);
  EXPECT_EQ(load, (std::vector<int64_t>{3, 2, 0, 1}));
}

TEST(Permute, PlanGroupsByExpertStablyAndRoundTrips) {
  const int64_t n = 6, k = 2, e = 3, d = 3;
  Tensor ids = Tensor::empty({n, k}, DType::kI32);
  const int32_t values[12] = {2, 0, 1, 2, 0, 1, 2, 1, 0, 2, 1, 0};
  std::copy(values, values + 12, ids.data<int32_t>());
  const auto plan = kernels::make_permute_plan(ids, e);
  EXPECT_EQ(plan.expert_offsets, (std::vector<int64_t>{0, 4, 8, 12}));
  // Expert 0 gets tokens 0, 2, 4, 5 in token order.
  EXPECT_EQ(std::vector<int64_t>(plan.token_of_row.begin(), plan.token_of_row.begin() + 4),
            (std::vector<int64_t>{0, 2, 4, 5}));
  Tensor x = random_tensor({n, d}, 4), xp = Tensor::empty({n * k, d}, DType::kF64);
  kernels::permute_rows(x, plan, xp);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < d; ++c)
        EXPECT_EQ(xp.data<double>()[plan.row_of_slot[t * k + j] * d + c],
                  x.data<double>()[t * d + c]);
  // Unpermuting with weights that sum to one per token restores the tokens exactly.
  Tensor w = Tensor::empty({n, k}, DType::kF64), y = Tensor::empty({n, d}, DType::kF64);
  for (int64_t i = 0; i < n * k; ++i) w.data<double>()[i] = 0.5;
  kernels::unpermute_weighted(xp, w, plan, y);
  for (int64_t i = 0; i < n * d; ++i) EXPECT_EQ(y.data<double>()[i], x.data<double>()[i]);
}

TEST(Permute, RejectsOutOfRangeExpertIds) {
  Tensor ids = Tensor::empty({2, 1}, DType::kI32);
  ids.data<int32_t>()[0] = 0;
  ids.data<int32_t>()[1] = 5;
  EXPECT_THROW(kernels::make_permute_plan(ids, 4), Error);
}

}  // namespace
}  // namespace tandem
