// Every kernel's backward against central finite differences in double precision, on random
// inputs of awkward sizes (no multiples of 8). Bound: relative error 1e-6 of the largest gradient
// entry; central differences with ε = 1e-6 in fp64 are accurate to about 1e-9 here. The linear
// GEMMs' bf16-operand form is checked against the same products summed in double.
#include <gtest/gtest.h>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/permute.h"
#include "kernels/rope.h"
#include "kernels/router.h"
#include "tests/unit/grad_check.h"

namespace tandem {
namespace {

using testing::dot;
using testing::gradient_error;
using testing::random_tensor;
constexpr double kBound = 1e-6;
constexpr DType kF64 = DType::kF64;

TEST(KernelGradients, Linear) {
  Tensor x = random_tensor({7, 5}, 1), w = random_tensor({3, 5}, 2), r = random_tensor({7, 3}, 3);
  auto loss = [&] {
    Tensor y = Tensor::empty({7, 3}, kF64);
    kernels::linear_forward(x, w, y);
    return dot(y, r);
  };
  Tensor dx = Tensor::empty({7, 5}, kF64), dw = Tensor::zeros({3, 5}, kF64);
  kernels::linear_dgrad(r, w, dx);
  kernels::linear_wgrad(r, x, dw);
  EXPECT_LT(gradient_error(x, dx, loss), kBound);
  EXPECT_LT(gradient_error(w, dw, loss), kBound);
  // wgrad accumulates: a second call doubles the gradient.
  Tensor dw2 = dw.clone();
  kernels::linear_wgrad(r, x, dw2);
  EXPECT_DOUBLE_EQ(dw2.data<double>()[4], 2 * dw.data<double>()[4]);
}

// bf16 operands, fp32 result: each of forward, dgrad and wgrad against Σ a·b in double over the
// bf16 values (exact products; only fp32 summation differs), and mixed dtypes refused.
TEST(KernelGradients, LinearBf16Operands) {
  const int64_t n = 37, in = 45, out = 19;
  auto bf16_of = [](Shape shape, uint64_t seed) {
    const Tensor wide = random_tensor(std::move(shape), seed, 1.0, DType::kF32);
    Tensor narrow = Tensor::empty(wide.shape(), DType::kBF16);
    kernels::convert(wide, narrow);
    return narrow;
  };
  const Tensor x = bf16_of({n, in}, 11), w = bf16_of({out, in}, 12), dy = bf16_of({n, out}, 13);
  auto at = [](const Tensor& t, int64_t i, int64_t j) {
    return static_cast<double>(to_float(t.data<bf16>()[i * t.dim(1) + j]));
  };
  // Largest |got − Σ| / Σ|terms| over the [rows, cols] result, terms(i, j, l) for l < depth.
  auto worst = [](const Tensor& got, int64_t depth, auto term) {
    double bound = 0;
    for (int64_t i = 0; i < got.dim(0); ++i)
      for (int64_t j = 0; j < got.dim(1); ++j) {
        double sum = 0, magnitude = 0;
        for (int64_t l = 0; l < depth; ++l) {
          sum += term(i, j, l);
          magnitude += std::abs(term(i, j, l));
        }
        bound = std::max(bound, std::abs(got.data<float>()[i * got.dim(1) + j] - sum) / magnitude);
      }
    return bound;
  };
  Tensor y = Tensor::empty({n, out}, DType::kF32), dx = Tensor::empty({n, in}, DType::kF32);
  Tensor dw = Tensor::zeros({out, in}, DType::kF32);
  kernels::linear_forward(x, w, y);
  kernels::linear_dgrad(dy, w, dx);
  kernels::linear_wgrad(dy, x, dw);
  EXPECT_LT(
      worst(y, in, [&](int64_t i, int64_t j, int64_t l) { return at(x, i, l) * at(w, j, l); }),
      1e-6);
  EXPECT_LT(
      worst(dx, out, [&](int64_t i, int64_t j, int64_t l) { return at(dy, i, l) * at(w, l, j); }),
      1e-6);
  EXPECT_LT(
      worst(dw, n, [&](int64_t i, int64_t j, int64_t l) { return at(dy, l, i) * at(x, l, j); }),
      1e-6);
  Tensor wide_w = Tensor::empty({out, in}, DType::kF32);
  kernels::convert(w, wide_w);
  EXPECT_THROW(kernels::linear_forward(x, wide_w, y), Error);
  Tensor narrow_y = Tensor::empty({n, out}, DType::kBF16);
  EXPECT_THROW(kernels::linear_forward(x, w, narrow_y), Error);
}

TEST(KernelGradients, Embedding) {
  Tensor tokens = Tensor::empty({9}, DType::kI32);
  const int32_t ids[9] = {3, 0, 10, 3, 7, 3, 1, 10, 5};  // repeats must accumulate
  std::copy(ids, ids + 9, tokens.data<int32_t>());
  Tensor table = random_tensor({11, 5}, 4), r = random_tensor({9, 5}, 5);
  auto loss = [&] {
    Tensor out = Tensor::empty({9, 5}, kF64);
    kernels::embedding_forward(tokens, table, out);
    return dot(out, r);
  };
  Tensor dtable = Tensor::zeros({11, 5}, kF64);
  kernels::embedding_wgrad(tokens, r, dtable);
  EXPECT_LT(gradient_error(table, dtable, loss, 1e-6, 1000), kBound);
  tokens.data<int32_t>()[2] = 11;
  Tensor out = Tensor::empty({9, 5}, kF64);
  EXPECT_THROW(kernels::embedding_forward(tokens, table, out), Error);
}

TEST(KernelGradients, RmsNorm) {
  Tensor x = random_tensor({7, 13}, 6), g = random_tensor({13}, 7), r = random_tensor({7, 13}, 8);
  Tensor rstd = Tensor::empty({7}, kF64);
  auto loss = [&] {
    Tensor y = Tensor::empty({7, 13}, kF64);
    kernels::rmsnorm_forward(x, g, 1e-6, y, rstd);
    return dot(y, r);
  };
  loss();
  Tensor dx = Tensor::empty({7, 13}, kF64), dg = Tensor::zeros({13}, kF64);
  kernels::rmsnorm_dgrad(r, x, g, rstd, dx);
  kernels::rmsnorm_wgrad(r, x, rstd, dg);
  EXPECT_LT(gradient_error(x, dx, loss), kBound);
  EXPECT_LT(gradient_error(g, dg, loss), kBound);
}

TEST(KernelGradients, Rope) {
  const int64_t seq = 5, heads = 2, width = 3 * heads * 6;
  Tensor x = random_tensor({2 * seq, width}, 9), r = random_tensor({2 * seq, width}, 10);
  auto loss = [&] {
    Tensor y = x.clone();
    kernels::rope_apply(y, seq, heads, 10000.0, false);
    return dot(y, r);
  };
  Tensor dx = r.clone();
  kernels::rope_apply(dx, seq, heads, 10000.0, true);
  EXPECT_LT(gradient_error(x, dx, loss, 1e-6, 200), kBound);
  // Position 0 is not rotated; rotations preserve each pair's norm.
  Tensor y = x.clone();
  kernels::rope_apply(y, seq, heads, 10000.0, false);
  EXPECT_DOUBLE_EQ(y.data<double>()[1], x.data<double>()[1]);
  const double* a = x.data<double>() + 3 * width;
  const double* b = y.data<double>() + 3 * width;
  EXPECT_NEAR(a[2] * a[2] + a[3] * a[3], b[2] * b[2] + b[3] * b[3], 1e-12);
}

TEST(KernelGradients, CausalAttention) {
  const int64_t batch = 2, seq = 7, heads = 3, head_dim = 5, d = heads * head_dim;
  Tensor qkv = random_tensor({batch * seq, 3 * d}, 11), r = random_tensor({batch * seq, d}, 12);
  Tensor probs = Tensor::empty({batch, heads, seq, seq}, kF64);
  auto loss = [&] {
    Tensor out = Tensor::empty({batch * seq, d}, kF64);
    kernels::attention_forward(qkv, seq, heads, out, probs);
    return dot(out, r);
  };
  loss();
  Tensor dqkv = Tensor::empty(qkv.shape(), kF64);
  kernels::attention_backward(r, qkv, probs, seq, heads, dqkv);
  EXPECT_LT(gradient_error(qkv, dqkv, loss, 1e-6, 400), kBound);
  // Causality: changing the keys and values of token t+1 (every head, every sequence) leaves the
  // outputs at positions 0..t unchanged, and changes position t+1.
  Tensor before = Tensor::empty({batch * seq, d}, kF64);
  kernels::attention_forward(qkv, seq, heads, before, probs);
  for (int64_t t = 0; t + 1 < seq; ++t) {
    Tensor changed = qkv.clone(), after = Tensor::empty({batch * seq, d}, kF64);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = d; c < 3 * d; ++c)
        changed.data<double>()[(b * seq + t + 1) * 3 * d + c] += 0.5;
    kernels::attention_forward(changed, seq, heads, after, probs);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t p = 0; p <= t; ++p)
        for (int64_t c = 0; c < d; ++c)
          ASSERT_EQ(after.data<double>()[(b * seq + p) * d + c],
                    before.data<double>()[(b * seq + p) * d + c])
              << "position " << p << " sees token " << t + 1;
      EXPECT_NE(after.data<double>()[(b * seq + t + 1) * d],
                before.data<double>()[(b * seq + t + 1) * d]);
    }
  }
}

// The fused form (log-sum-exp kept, probabilities recomputed) against finite differences, its
// output against the kept form's, and its lse against log Σ exp of the scores summed here.
TEST(KernelGradients, FusedCausalAttention) {
  const int64_t batch = 2, seq = 9, heads = 2, head_dim = 3, d = heads * head_dim;
  Tensor qkv = random_tensor({batch * seq, 3 * d}, 13), r = random_tensor({batch * seq, d}, 14);
  Tensor out = Tensor::empty({batch * seq, d}, kF64),
         lse = Tensor::empty({batch, heads, seq}, kF64);
  auto loss = [&] {
    kernels::fused_attention_forward(qkv, seq, heads, out, lse);
    return dot(out, r);
  };
  loss();
  Tensor dqkv = Tensor::empty(qkv.shape(), kF64);
  kernels::fused_attention_backward(r, qkv, out, lse, seq, heads, dqkv);
  EXPECT_LT(gradient_error(qkv, dqkv, loss, 1e-6, 400), kBound);
  Tensor kept = Tensor::empty(out.shape(), kF64),
         probs = Tensor::empty({batch, heads, seq, seq}, kF64);
  kernels::attention_forward(qkv, seq, heads, kept, probs);
  loss();  // qkv as it was: gradient_error restores every entry it moves
  for (int64_t i = 0; i < out.numel(); ++i)
    EXPECT_NEAR(out.data<double>()[i], kept.data<double>()[i], 1e-12);
  const double* x = qkv.data<double>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < seq; ++i) {
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double score = 0;
          for (int64_t c = 0; c < head_dim; ++c)
            score += x[(b * seq + i) * 3 * d + h * head_dim + c] *
                     x[(b * seq + j) * 3 * d + d + h * head_dim + c];
          sum += std::exp(score / std::sqrt(double(head_dim)));
        }
        EXPECT_NEAR(lse.data<double>()[(b * heads + h) * seq + i], std::log(sum), 1e-12);
      }
}

TEST(KernelGradients, SwiGlu) {
  Tensor gu = random_tensor({7, 10}, 13), r = random_tensor({7, 5}, 14);
  auto loss = [&] {
    Tensor h = Tensor::empty({7, 5}, kF64);
    kernels::swiglu_forward(gu, h);
    return dot(h, r);
  };
  Tensor dgu = Tensor::empty({7, 10}, kF64);
  kernels::swiglu_backward(r, gu, dgu);
  EXPECT_LT(gradient_error(gu, dgu, loss), kBound);
}

TEST(KernelGradients, RouterGateWeights) {
  const int64_t n = 9, e = 6, k = 3;
  Tensor logits = random_tensor({n, e}, 15), bias = random_tensor({e}, 16, 0.1);
  Tensor r = random_tensor({n, k}, 17);
  Tensor affinity = Tensor::empty({n, e}, kF64), ids = Tensor::empty({n, k}, DType::kI32);
  auto loss = [&] {
    Tensor w = Tensor::empty({n, k}, kF64);
    kernels::router_forward(logits, bias, k, affinity, ids, w);
    return dot(w, r);
  };
  loss();
  Tensor dlogits = Tensor::empty({n, e}, kF64);
  kernels::router_backward(r, affinity, ids, dlogits);
  EXPECT_LT(gradient_error(logits, dlogits, loss, 1e-7, 1000), kBound);
}

TEST(KernelGradients, PermuteAndWeightedUnpermute) {
  const int64_t n = 7, k = 3, e = 4, d = 5;
  Tensor ids = Tensor::empty({n, k}, DType::kI32);
  for (int64_t i = 0; i < n * k; ++i)
    ids.data<int32_t>()[i] = static_cast<int32_t>((i * 5 + i / 3) % e);
  const auto plan = kernels::make_permute_plan(ids, e);

  Tensor x = random_tensor({n, d}, 18), rp = random_tensor({n * k, d}, 19);
  auto permute_loss = [&] {
    Tensor xp = Tensor::empty({n * k, d}, kF64);
    kernels::permute_rows(x, plan, xp);
    return dot(xp, rp);
  };
  Tensor dx = Tensor::empty({n, d}, kF64);
  kernels::permute_rows_backward(rp, plan, dx);
  EXPECT_LT(gradient_error(x, dx, permute_loss, 1e-6, 1000), kBound);

  Tensor yp = random_tensor({n * k, d}, 20), w = random_tensor({n, k}, 21);
  Tensor r = random_tensor({n, d}, 22);
  auto unpermute_loss = [&] {
    Tensor y = Tensor::empty({n, d}, kF64);
    kernels::unpermute_weighted(yp, w, plan, y);
    return dot(y, r);
  };
  Tensor dyp = Tensor::empty({n * k, d}, kF64), dw = Tensor::empty({n, k}, kF64);
  kernels::unpermute_weighted_backward(r, yp, w, plan, dyp, dw);
  EXPECT_LT(gradient_error(yp, dyp, unpermute_loss, 1e-6, 1000), kBound);
  EXPECT_LT(gradient_error(w, dw, unpermute_loss, 1e-6, 1000), kBound);
}

TEST(KernelGradients, CrossEntropy) {
  const int64_t n = 9, v = 11;
  Tensor logits = random_tensor({n, v}, 23, 2.0), targets = Tensor::empty({n}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) targets.data<int32_t>()[i] = static_cast<int32_t>((i * 7) % v);
  const double scale = 1.0 / n;
  auto loss = [&] { return kernels::cross_entropy(logits, targets, 0, nullptr) * scale; };
  Tensor dlogits = Tensor::empty({n, v}, kF64);
  const double value = kernels::cross_entropy(logits, targets, scale, &dlogits);
  EXPECT_NEAR(value * scale, loss(), 1e-14);
  EXPECT_LT(gradient_error(logits, dlogits, loss, 1e-6, 1000), kBound);
  // Uniform logits give exactly ln(V) per token.
  Tensor flat = Tensor::zeros({n, v}, kF64);
  EXPECT_NEAR(kernels::cross_entropy(flat, targets, 0, nullptr) / n, std::log(double(v)), 1e-12);
}

}  // namespace
}  // namespace tandem
