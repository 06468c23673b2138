// GPU check of the CUDA kernels beside FP8 (scripts/gpu-check runs it on a GPU machine; CI
// builds it, and without a GPU it says it skipped): RMSNorm forward / dgrad / wgrad, SwiGLU
// forward / backward, AdamW, RoPE (both directions), the embedding lookup and its gradient (bit for
// bit: the same adds in the same order), cross-entropy with its gradient (also in place), axpy,
// scale and the sum of squares, each against the CPU reference on the same random inputs, to fp32
// rounding elsewhere (reductions run in another order; expf may differ in the last bit). Then the
// device checks at kernel entries: tensors on two devices are refused, and so is a CUDA tensor
// given to a kernel that has no CUDA implementation yet.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "kernels/rope.h"
#include "runtime/core/device.h"
#include "tests/gpu/check_report.h"

using namespace tandem;
using tandem::gpu_check::expect;
using tandem::gpu_check::failures;
using namespace tandem::kernels;

namespace {

Tensor random_tensor(Shape shape, uint32_t seed, float lo = -2, float hi = 2) {
  Tensor t = Tensor::empty(std::move(shape), DType::kF32);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

const Device kGpu = Device::cuda(0);

std::string shape_text(int64_t rows, int64_t cols) {
  char text[64];
  std::snprintf(text, sizeof text, "[%lld x %lld]", static_cast<long long>(rows),
                static_cast<long long>(cols));
  return text;
}

// |gpu − cpu| ≤ tolerance · (|cpu| + the mean |cpu|) everywhere: relative where values are
// large, absolute (at the tensor's own scale) where they are near zero.
void expect_close(const std::string& what, const Tensor& gpu, const Tensor& cpu, double tolerance) {
  const Tensor host = gpu.to(Device::cpu());
  const float* a = host.data<float>();
  const float* b = cpu.data<float>();
  double mean = 0, worst = 0;
  for (int64_t i = 0; i < cpu.numel(); ++i) mean += std::fabs(b[i]);
  mean /= std::max<int64_t>(1, cpu.numel());
  bool ok = true;
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    const double err = std::fabs(double(a[i]) - b[i]) / (std::fabs(b[i]) + mean + 1e-30);
    worst = std::max(worst, err);
    ok = ok && std::isfinite(a[i]) && err <= tolerance;
  }
  char line[256];
  std::snprintf(line, sizeof line, "%s: largest relative difference %.2e (bound %.0e)",
                what.c_str(), worst, tolerance);
  expect(ok, line);
}

void check_rmsnorm(int64_t n, int64_t d, uint32_t seed) {
  const std::string shape = shape_text(n, d);
  const Tensor x = random_tensor({n, d}, seed), g = random_tensor({d}, seed + 1, 0.5f, 1.5f);
  const Tensor dy = random_tensor({n, d}, seed + 2);
  Tensor y = Tensor::empty({n, d}, DType::kF32), rstd = Tensor::empty({n}, DType::kF32);
  Tensor dx = Tensor::empty({n, d}, DType::kF32), dg = random_tensor({d}, seed + 3);
  const Tensor dg_before = dg.clone();
  rmsnorm_forward(x, g, 1e-6, y, rstd);
  rmsnorm_dgrad(dy, x, g, rstd, dx);
  rmsnorm_wgrad(dy, x, rstd, dg);

  const Tensor xg = x.to(kGpu), gg = g.to(kGpu), dyg = dy.to(kGpu);
  Tensor yg = Tensor::empty({n, d}, DType::kF32, kGpu), rg = Tensor::empty({n}, DType::kF32, kGpu);
  Tensor dxg = Tensor::empty({n, d}, DType::kF32, kGpu), dgg = dg_before.to(kGpu);
  rmsnorm_forward(xg, gg, 1e-6, yg, rg);
  rmsnorm_dgrad(dyg, xg, gg, rstd.to(kGpu), dxg);
  rmsnorm_wgrad(dyg, xg, rstd.to(kGpu), dgg);
  expect_close("rmsnorm forward " + shape, yg, y, 1e-5);
  expect_close("rmsnorm rstd " + shape, rg, rstd, 1e-5);
  expect_close("rmsnorm dgrad " + shape, dxg, dx, 1e-5);
  expect_close("rmsnorm wgrad (accumulated) " + shape, dgg, dg, 1e-5);
}

void check_swiglu(int64_t n, int64_t f, uint32_t seed) {
  const std::string shape = shape_text(n, 2 * f);
  const Tensor gate_up = random_tensor({n, 2 * f}, seed, -6, 6),
               dh = random_tensor({n, f}, seed + 1);
  Tensor h = Tensor::empty({n, f}, DType::kF32), dgu = Tensor::empty({n, 2 * f}, DType::kF32);
  swiglu_forward(gate_up, h);
  swiglu_backward(dh, gate_up, dgu);
  Tensor hg = Tensor::empty({n, f}, DType::kF32, kGpu);
  Tensor dgug = Tensor::empty({n, 2 * f}, DType::kF32, kGpu);
  swiglu_forward(gate_up.to(kGpu), hg);
  swiglu_backward(dh.to(kGpu), gate_up.to(kGpu), dgug);
  expect_close("swiglu forward " + shape, hg, h, 1e-6);
  expect_close("swiglu backward " + shape, dgug, dgu, 1e-6);
}

void check_adamw(int64_t n, uint32_t seed) {
  Tensor p = random_tensor({n}, seed), m = random_tensor({n}, seed + 1, -0.1f, 0.1f);
  Tensor v = random_tensor({n}, seed + 2, 0, 0.01f);
  const Tensor grad = random_tensor({n}, seed + 3);
  Tensor pg = p.to(kGpu), mg = m.to(kGpu), vg = v.to(kGpu);
  const Tensor gradg = grad.to(kGpu);
  for (int64_t step = 1; step <= 3; ++step) {
    const AdamWHyper h{1e-3, 0.9, 0.95, 1e-8, 0.1, step};
    adamw_update(p, grad, m, v, h);
    adamw_update(pg, gradg, mg, vg, h);
  }
  const std::string what = "adamw 3 steps " + shape_text(1, n);
  expect_close(what + " parameters", pg, p, 1e-6);
  expect_close(what + " first moments", mg, m, 1e-6);
  expect_close(what + " second moments", vg, v, 1e-6);
}

void check_rope(int64_t sequences, int64_t seq_len, int64_t n_heads, int64_t head_dim,
                uint32_t seed) {
  const int64_t rows = sequences * seq_len, width = 3 * n_heads * head_dim;
  const Tensor qkv = random_tensor({rows, width}, seed);
  for (const bool inverse : {false, true}) {
    Tensor cpu = qkv.clone(), gpu = qkv.to(kGpu);
    rope_apply(cpu, seq_len, n_heads, 10000, inverse);
    rope_apply(gpu, seq_len, n_heads, 10000, inverse);
    expect_close(std::string("rope ") + (inverse ? "inverse " : "") + shape_text(rows, width), gpu,
                 cpu, 1e-6);
    // The v third is left alone.
    const Tensor back = gpu.to(Device::cpu());
    bool v_same = true;
    for (int64_t r = 0; r < rows; ++r)
      v_same = v_same && std::memcmp(back.data<float>() + r * width + 2 * width / 3,
                                     qkv.data<float>() + r * width + 2 * width / 3,
                                     width / 3 * sizeof(float)) == 0;
    expect(v_same, "rope leaves v unchanged " + shape_text(rows, width));
  }
}

template <class F>
void expect_refused(const std::string& what, const std::string& needle, F&& f) {
  try {
    f();
    expect(false, what + ": not refused");
  } catch (const Error& e) {
    const std::string message = e.what();
    expect(message.find(needle) != std::string::npos, what + ": " + message);
  }
}

Tensor random_ids(int64_t n, int32_t limit, uint32_t seed) {
  Tensor t = Tensor::empty({n}, DType::kI32);
  std::mt19937 rng(seed);
  // Few distinct ids, so that the gradient adds many rows into the same one.
  std::uniform_int_distribution<int32_t> id(0, limit - 1);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = id(rng) % std::max(1, limit / 8);
  return t;
}

bool same_bits(const Tensor& gpu, const Tensor& cpu) {
  const Tensor host = gpu.to(Device::cpu());
  return host.nbytes() == cpu.nbytes() &&
         std::memcmp(host.raw_data(), cpu.raw_data(), cpu.nbytes()) == 0;
}

void check_embedding(int64_t n, int64_t vocab, int64_t d, uint32_t seed) {
  const Tensor ids = random_ids(n, static_cast<int32_t>(vocab), seed);
  const Tensor table = random_tensor({vocab, d}, seed + 1), dout = random_tensor({n, d}, seed + 2);
  Tensor out = Tensor::empty({n, d}, DType::kF32), dtable = random_tensor({vocab, d}, seed + 3);
  const Tensor dtable_before = dtable.clone();
  embedding_forward(ids, table, out);
  embedding_wgrad(ids, dout, dtable);
  Tensor outg = Tensor::empty({n, d}, DType::kF32, kGpu), dtableg = dtable_before.to(kGpu);
  embedding_forward(ids.to(kGpu), table.to(kGpu), outg);
  embedding_wgrad(ids.to(kGpu), dout.to(kGpu), dtableg);
  const std::string shape = shape_text(n, d);
  expect(same_bits(outg, out), "embedding forward " + shape + ": the CPU's bits");
  expect(same_bits(dtableg, dtable),
         "embedding wgrad (repeated ids) " + shape + ": the CPU's bits");
  Tensor bad = ids.clone();
  bad.data<int32_t>()[n - 1] = static_cast<int32_t>(vocab);
  expect_refused("embedding with an id past the vocabulary", "outside the vocabulary",
                 [&] { embedding_forward(bad.to(kGpu), table.to(kGpu), outg); });
}

void check_cross_entropy(int64_t n, int64_t v, uint32_t seed) {
  const Tensor logits = random_tensor({n, v}, seed, -8, 8);
  const Tensor targets = random_ids(n * 8, static_cast<int32_t>(v * 8), seed + 1).rows(0, n);
  Tensor dz = Tensor::empty({n, v}, DType::kF32);
  const double loss = cross_entropy(logits, targets, 0.25, &dz);
  Tensor dzg = Tensor::empty({n, v}, DType::kF32, kGpu);
  const double lossg = cross_entropy(logits.to(kGpu), targets.to(kGpu), 0.25, &dzg);
  const std::string shape = shape_text(n, v);
  char line[160];
  std::snprintf(line, sizeof line, "cross-entropy %s: loss %.9g vs CPU %.9g", shape.c_str(), lossg,
                loss);
  expect(std::fabs(lossg - loss) <= 1e-5 * std::fabs(loss), line);
  expect_close("cross-entropy gradient " + shape, dzg, dz, 1e-5);
  // In place: the gradient overwrites the logits.
  Tensor inplace = logits.to(kGpu);
  const double lossi = cross_entropy(inplace, targets.to(kGpu), 0.25, &inplace);
  expect(lossi == lossg, "cross-entropy in place: the same loss");
  expect_close("cross-entropy gradient in place " + shape, inplace, dz, 1e-5);
}

void check_elementwise(int64_t n, uint32_t seed) {
  const Tensor x = random_tensor({n}, seed);
  Tensor y = random_tensor({n}, seed + 1);
  Tensor yg = y.to(kGpu);
  axpy(0.375, x, y);
  axpy(0.375, x.to(kGpu), yg);
  expect(same_bits(yg, y), "axpy " + shape_text(1, n) + ": the CPU's bits");
  scale(y, -1.5);
  scale(yg, -1.5);
  expect(same_bits(yg, y), "scale " + shape_text(1, n) + ": the CPU's bits");
  const double s = sum_of_squares(y), sg = sum_of_squares(yg);
  char line[160];
  std::snprintf(line, sizeof line, "sum of squares %s: %.17g vs CPU %.17g",
                shape_text(1, n).c_str(), sg, s);
  expect(std::fabs(sg - s) <= 1e-10 * s, line);
}

}  // namespace

int main() {
  if (gpu_check::skipped_without_gpu("kernel_check")) return 0;
  uint32_t seed = 7;
  for (const auto& [n, d] :
       {std::pair<int64_t, int64_t>{1, 7}, {64, 256}, {333, 1000}, {512, 7168}})
    check_rmsnorm(n, d, seed += 10);
  for (const auto& [n, f] : {std::pair<int64_t, int64_t>{1, 3}, {128, 96}, {1000, 2048}})
    check_swiglu(n, f, seed += 10);
  for (const int64_t n : {1, 4, 1023, 1 << 20}) check_adamw(n, seed += 10);
  for (const auto& [n, vocab, d] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 1, 5}, {512, 256, 128}, {4096, 1000, 7168}})
    check_embedding(n, vocab, d, seed += 10);
  for (const auto& [n, v] : {std::pair<int64_t, int64_t>{1, 2}, {64, 256}, {300, 32000}})
    check_cross_entropy(n, v, seed += 10);
  for (const int64_t n : {1, 1000, 1 << 22}) check_elementwise(n, seed += 10);
  check_rope(1, 1, 1, 2, seed += 10);
  check_rope(2, 128, 4, 32, seed += 10);
  check_rope(4, 4096, 16, 128, seed += 10);
  // Views that are not 16-byte aligned take AdamW's scalar path.
  {
    Tensor p = random_tensor({1025}, 3), m = random_tensor({1025}, 4),
           v = random_tensor({1025}, 5, 0, 1);
    const Tensor grad = random_tensor({1025}, 6);
    Tensor pg = p.to(kGpu).rows(1, 1025), mg = m.to(kGpu).rows(1, 1025),
           vg = v.to(kGpu).rows(1, 1025);
    Tensor pc = p.rows(1, 1025).clone(), mc = m.rows(1, 1025).clone(), vc = v.rows(1, 1025).clone();
    const AdamWHyper h{1e-3, 0.9, 0.95, 1e-8, 0.1, 1};
    adamw_update(pc, grad.rows(1, 1025), mc, vc, h);
    adamw_update(pg, grad.to(kGpu).rows(1, 1025), mg, vg, h);
    expect_close("adamw on an unaligned view [1024]", pg, pc, 1e-6);
  }
  const Tensor x = random_tensor({4, 8}, 1), g = random_tensor({8}, 2);
  Tensor y = Tensor::empty({4, 8}, DType::kF32, kGpu), rstd = Tensor::empty({4}, DType::kF32, kGpu);
  expect_refused("rmsnorm with CPU input and CUDA output", "tensors on cpu and cuda:0",
                 [&] { rmsnorm_forward(x, g, 1e-6, y, rstd); });
  Tensor probs = Tensor::zeros({4}, DType::kF32, kGpu);
  Tensor attn = Tensor::zeros({4, 8}, DType::kF32, kGpu);
  expect_refused("attention on CUDA (no CUDA kernel yet)", "has no kernel for cuda:0", [&] {
    attention_forward(Tensor::zeros({4, 24}, DType::kF32, kGpu), 4, 2, attn, probs);
  });
  std::printf("kernel_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
