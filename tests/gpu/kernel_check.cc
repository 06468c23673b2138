// GPU check of the CUDA kernels beside FP8 (scripts/gpu-check runs it on a GPU machine; CI
// builds it, and without a GPU it says it skipped): RMSNorm forward / dgrad / wgrad, SwiGLU
// forward / backward, AdamW, RoPE (both directions), the embedding lookup and its gradient (bit for
// bit: the same adds in the same order), cross-entropy with its gradient (also in place), axpy,
// scale and the sum of squares, the linear GEMMs (cuBLASLt, fp32 and bf16 operands), causal
// attention forward and backward (kept probabilities, and fused), the router (the CPU's expert
// choice exactly) and its backward and bias update, the permutation plan (made on the GPU by CUB;
// ids out of range refused), permute / unpermute and their backwards, bf16 conversion and FP8 block
// transposes, each against the CPU reference on the same random inputs: bit for bit where the same
// operations run in the same order, else to fp32 rounding (reductions run in another order; expf
// may differ in the last bit); the memory-bound kernels both with 16-byte accesses and with the
// scalar loops they take at unaligned addresses. Then the device checks at kernel entries: tensors
// on two devices are refused, and so is a CUDA tensor given to a kernel that has no CUDA
// implementation yet.
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
#include "kernels/fp8.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "kernels/permute.h"
#include "kernels/rope.h"
#include "kernels/router.h"
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

// A GPU copy of `t`, `offset` elements into a larger block: at an offset of 1 its address is 4
// bytes (fp32) or 2 (bf16) past 16-byte alignment, which the 16-byte kernels must not take.
Tensor on_gpu(const Tensor& t, int64_t offset = 0) {
  if (offset == 0) return t.to(kGpu);
  Tensor block = Tensor::zeros({t.numel() + offset}, t.dtype(), kGpu);
  Tensor view = block.rows(offset, t.numel() + offset).reshape(t.shape());
  view.copy_from(t);
  return view;
}

std::string at_offset(int64_t offset) {
  return offset ? " at an offset of " + std::to_string(offset) : std::string();
}

std::string shape_text(int64_t rows, int64_t cols) {
  char text[64];
  std::snprintf(text, sizeof text, "[%lld x %lld]", static_cast<long long>(rows),
                static_cast<long long>(cols));
  return text;
}

void expect_close(const std::string& what, const Tensor& gpu, const Tensor& cpu, double tolerance) {
  const double worst = gpu_check::largest_relative_difference(gpu, cpu);
  char line[256];
  std::snprintf(line, sizeof line, "%s: largest relative difference %.2e (bound %.0e)",
                what.c_str(), worst, tolerance);
  expect(worst <= tolerance, line);
}

void check_rmsnorm(int64_t n, int64_t d, uint32_t seed, int64_t offset = 0) {
  const std::string shape = shape_text(n, d) + at_offset(offset);
  const Tensor x = random_tensor({n, d}, seed), g = random_tensor({d}, seed + 1, 0.5f, 1.5f);
  const Tensor dy = random_tensor({n, d}, seed + 2);
  Tensor y = Tensor::empty({n, d}, DType::kF32), rstd = Tensor::empty({n}, DType::kF32);
  Tensor dx = Tensor::empty({n, d}, DType::kF32), dg = random_tensor({d}, seed + 3);
  const Tensor dg_before = dg.clone();
  rmsnorm_forward(x, g, 1e-6, y, rstd);
  rmsnorm_dgrad(dy, x, g, rstd, dx);
  rmsnorm_wgrad(dy, x, rstd, dg);

  const Tensor xg = on_gpu(x, offset), gg = on_gpu(g, offset), dyg = on_gpu(dy, offset);
  Tensor yg = on_gpu(Tensor::zeros({n, d}, DType::kF32), offset),
         rg = Tensor::empty({n}, DType::kF32, kGpu);
  Tensor dxg = on_gpu(Tensor::zeros({n, d}, DType::kF32), offset), dgg = dg_before.to(kGpu);
  rmsnorm_forward(xg, gg, 1e-6, yg, rg);
  rmsnorm_dgrad(dyg, xg, gg, rstd.to(kGpu), dxg);
  rmsnorm_wgrad(dyg, xg, rstd.to(kGpu), dgg);
  expect_close("rmsnorm forward " + shape, yg, y, 1e-5);
  expect_close("rmsnorm rstd " + shape, rg, rstd, 1e-5);
  expect_close("rmsnorm dgrad " + shape, dxg, dx, 1e-5);
  expect_close("rmsnorm wgrad (accumulated) " + shape, dgg, dg, 1e-5);
}

void check_swiglu(int64_t n, int64_t f, uint32_t seed, int64_t offset = 0) {
  const std::string shape = shape_text(n, 2 * f) + at_offset(offset);
  const Tensor gate_up = random_tensor({n, 2 * f}, seed, -6, 6),
               dh = random_tensor({n, f}, seed + 1);
  Tensor h = Tensor::empty({n, f}, DType::kF32), dgu = Tensor::empty({n, 2 * f}, DType::kF32);
  swiglu_forward(gate_up, h);
  swiglu_backward(dh, gate_up, dgu);
  Tensor hg = on_gpu(Tensor::zeros({n, f}, DType::kF32), offset);
  Tensor dgug = on_gpu(Tensor::zeros({n, 2 * f}, DType::kF32), offset);
  swiglu_forward(on_gpu(gate_up, offset), hg);
  swiglu_backward(on_gpu(dh, offset), on_gpu(gate_up, offset), dgug);
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

void check_embedding(int64_t n, int64_t vocab, int64_t d, uint32_t seed, int64_t offset = 0) {
  const Tensor ids = random_ids(n, static_cast<int32_t>(vocab), seed);
  const Tensor table = random_tensor({vocab, d}, seed + 1), dout = random_tensor({n, d}, seed + 2);
  Tensor out = Tensor::empty({n, d}, DType::kF32), dtable = random_tensor({vocab, d}, seed + 3);
  const Tensor dtable_before = dtable.clone();
  embedding_forward(ids, table, out);
  embedding_wgrad(ids, dout, dtable);
  Tensor outg = on_gpu(Tensor::zeros({n, d}, DType::kF32), offset),
         dtableg = dtable_before.to(kGpu);
  embedding_forward(ids.to(kGpu), on_gpu(table, offset), outg);
  embedding_wgrad(ids.to(kGpu), dout.to(kGpu), dtableg);
  const std::string shape = shape_text(n, d) + at_offset(offset);
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

void check_elementwise(int64_t n, uint32_t seed, int64_t offset = 0) {
  const Tensor x = random_tensor({n}, seed);
  Tensor y = random_tensor({n}, seed + 1);
  const std::string shape = shape_text(1, n) + at_offset(offset);
  Tensor yg = on_gpu(y, offset);
  axpy(0.375, x, y);
  axpy(0.375, on_gpu(x, offset), yg);
  expect(same_bits(yg, y), "axpy " + shape + ": the CPU's bits");
  scale(y, -1.5);
  scale(yg, -1.5);
  expect(same_bits(yg, y), "scale " + shape + ": the CPU's bits");
  const double s = sum_of_squares(y), sg = sum_of_squares(yg);
  char line[160];
  std::snprintf(line, sizeof line, "sum of squares %s: %.17g vs CPU %.17g", shape.c_str(), sg, s);
  expect(std::fabs(sg - s) <= 1e-10 * s, line);
}

// The operands in `operands` (fp32, or bf16 rounded from the same values) and an fp32 result.
void check_linear(int64_t n, int64_t in, int64_t out, DType operands, uint32_t seed) {
  auto operand = [&](Shape shape, uint32_t s) {
    const Tensor wide = random_tensor(std::move(shape), s);
    Tensor t = Tensor::empty(wide.shape(), operands);
    convert(wide, t);
    return t;
  };
  const Tensor x = operand({n, in}, seed), w = operand({out, in}, seed + 1);
  const Tensor dy = operand({n, out}, seed + 2), y0 = random_tensor({n, out}, seed + 3);
  const Tensor dx0 = random_tensor({n, in}, seed + 4), dw0 = random_tensor({out, in}, seed + 5);
  const std::string shape =
      shape_text(n, in) + " -> " + std::to_string(out) + " " + std::string(dtype_name(operands));
  for (const bool accumulate : {false, true}) {
    Tensor y = y0.clone(), dx = dx0.clone();
    Tensor yg = y0.to(kGpu), dxg = dx0.to(kGpu);
    linear_forward(x, w, y, accumulate);
    linear_forward(x.to(kGpu), w.to(kGpu), yg, accumulate);
    linear_dgrad(dy, w, dx, accumulate);
    linear_dgrad(dy.to(kGpu), w.to(kGpu), dxg, accumulate);
    const std::string how = accumulate ? " (accumulating)" : "";
    // fp32 accumulation over K in another order (and TF32 is never enabled): K·2^-24 relative.
    // bf16 products are exact in fp32, but tensor cores may sum them with truncation: 1e-4.
    const double bound = operands == DType::kBF16 ? 1e-4 : 2e-5;
    expect_close("linear forward " + shape + how, yg, y, bound);
    expect_close("linear dgrad " + shape + how, dxg, dx, bound);
  }
  Tensor dw = dw0.clone(), dwg = dw0.to(kGpu);
  linear_wgrad(dy, x, dw);
  linear_wgrad(dy.to(kGpu), x.to(kGpu), dwg);
  expect_close("linear wgrad (accumulating) " + shape, dwg, dw,
               operands == DType::kBF16 ? 1e-4 : 2e-5);
}

void check_attention(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                     uint32_t seed) {
  const int64_t d = heads * head_dim, rows = batch * seq_len;
  const Tensor qkv = random_tensor({rows, 3 * d}, seed), dout = random_tensor({rows, d}, seed + 1);
  Tensor out = Tensor::empty({rows, d}, DType::kF32);
  Tensor probs = Tensor::empty({batch, heads, seq_len, seq_len}, DType::kF32);
  Tensor dqkv = Tensor::empty({rows, 3 * d}, DType::kF32);
  attention_forward(qkv, seq_len, heads, out, probs);
  attention_backward(dout, qkv, probs, seq_len, heads, dqkv);
  Tensor outg = Tensor::empty({rows, d}, DType::kF32, kGpu);
  Tensor probsg = Tensor::empty(probs.shape(), DType::kF32, kGpu);
  Tensor dqkvg = Tensor::empty(dqkv.shape(), DType::kF32, kGpu);
  const Tensor qkvg = qkv.to(kGpu);
  attention_forward(qkvg, seq_len, heads, outg, probsg);
  attention_backward(dout.to(kGpu), qkvg, probsg, seq_len, heads, dqkvg);
  char what[96];
  std::snprintf(what, sizeof what, "[B %lld T %lld H %lld hd %lld]", static_cast<long long>(batch),
                static_cast<long long>(seq_len), static_cast<long long>(heads),
                static_cast<long long>(head_dim));
  expect_close(std::string("attention probabilities ") + what, probsg, probs, 1e-5);
  expect_close(std::string("attention output ") + what, outg, out, 1e-5);
  expect_close(std::string("attention qkv gradient ") + what, dqkvg, dqkv, 1e-4);
  // The fused form on the GPU (online softmax; probabilities recomputed from the log-sum-exp)
  // against the CPU's fused form, and its output and gradients against the kept form's.
  // Fresh outputs full of NaN: an element a fused kernel does not write fails the comparisons.
  const auto nans = [](const Shape& shape, Device device) {
    Tensor t = Tensor::empty(shape, DType::kF32);
    std::fill(t.data<float>(), t.data<float>() + t.numel(), NAN);
    return t.to(device);
  };
  Tensor lse = nans({batch, heads, seq_len}, Device::cpu()),
         fused_out = nans(out.shape(), Device::cpu());
  Tensor fused_dqkv = nans(dqkv.shape(), Device::cpu());
  fused_attention_forward(qkv, seq_len, heads, fused_out, lse);
  fused_attention_backward(dout, qkv, fused_out, lse, seq_len, heads, fused_dqkv);
  Tensor lseg = nans(lse.shape(), kGpu);
  outg = nans(out.shape(), kGpu);
  dqkvg = nans(dqkv.shape(), kGpu);
  fused_attention_forward(qkvg, seq_len, heads, outg, lseg);
  fused_attention_backward(dout.to(kGpu), qkvg, outg, lseg, seq_len, heads, dqkvg);
  expect_close(std::string("fused attention log-sum-exp ") + what, lseg, lse, 1e-5);
  expect_close(std::string("fused attention output ") + what, outg, fused_out, 1e-5);
  expect_close(std::string("fused attention output against the kept form's ") + what, outg, out,
               1e-5);
  expect_close(std::string("fused attention qkv gradient ") + what, dqkvg, fused_dqkv, 1e-4);
  expect_close(std::string("fused attention qkv gradient against the kept form's ") + what, dqkvg,
               dqkv, 1e-4);
}

void check_router(int64_t n, int64_t e, int64_t k, RouteLimit limit, uint32_t seed) {
  const Tensor logits = random_tensor({n, e}, seed, -3, 3),
               bias = random_tensor({e}, seed + 1, -0.1f, 0.1f);
  const Tensor dgate = random_tensor({n, k}, seed + 2);
  Tensor affinity = Tensor::empty({n, e}, DType::kF32), ids = Tensor::empty({n, k}, DType::kI32);
  Tensor gates = Tensor::empty({n, k}, DType::kF32), dlogits = Tensor::empty({n, e}, DType::kF32);
  router_forward(logits, bias, k, affinity, ids, gates, limit);
  router_backward(dgate, affinity, ids, dlogits);
  Tensor affinityg = Tensor::empty({n, e}, DType::kF32, kGpu);
  Tensor idsg = Tensor::empty({n, k}, DType::kI32, kGpu);
  Tensor gatesg = Tensor::empty({n, k}, DType::kF32, kGpu);
  Tensor dlogitsg = Tensor::empty({n, e}, DType::kF32, kGpu);
  router_forward(logits.to(kGpu), bias.to(kGpu), k, affinityg, idsg, gatesg, limit);
  // The backward from the CPU's choice, so that its check does not hang on the forward's.
  router_backward(dgate.to(kGpu), affinity.to(kGpu), ids.to(kGpu), dlogitsg);
  char what[96];
  std::snprintf(what, sizeof what, "[%lld tokens, %lld experts, top-%lld, %lld of %lld groups]",
                static_cast<long long>(n), static_cast<long long>(e), static_cast<long long>(k),
                static_cast<long long>(limit.max_groups), static_cast<long long>(limit.groups));
  expect_close(std::string("router affinities ") + what, affinityg, affinity, 1e-6);
  expect(same_bits(idsg, ids), std::string("router expert choice ") + what + ": the CPU's");
  expect_close(std::string("router gate weights ") + what, gatesg, gates, 1e-6);
  expect_close(std::string("router logit gradient ") + what, dlogitsg, dlogits, 1e-5);
  std::vector<int64_t> load(e);
  for (int64_t x = 0; x < e; ++x) load[x] = (x * 7919) % 13;
  Tensor b = bias.clone(), bg = bias.to(kGpu);
  update_router_bias(load, 1e-3, b);
  update_router_bias(load, 1e-3, bg);
  expect(same_bits(bg, b), std::string("router bias update ") + what + ": the CPU's bits");
}

void check_permute(int64_t n, int64_t e, int64_t k, int64_t d, uint32_t seed) {
  Tensor ids = Tensor::empty({n, k}, DType::kI32);
  std::mt19937 rng(seed);
  for (int64_t t = 0; t < n; ++t) {  // k distinct experts per token, skewed towards the first
    std::vector<int32_t> all(e);
    for (int32_t x = 0; x < e; ++x) all[x] = x;
    std::shuffle(all.begin(), all.end(), rng);
    std::sort(all.begin(), all.begin() + k);
    for (int64_t j = 0; j < k; ++j) ids.data<int32_t>()[t * k + j] = all[j] / (j % 2 + 1);
  }
  const Tensor x = random_tensor({n, d}, seed + 1), w = random_tensor({n, k}, seed + 2, 0, 1);
  const Tensor dy = random_tensor({n, d}, seed + 3), yp = random_tensor({n * k, d}, seed + 4);
  const PermutePlan plan = make_permute_plan(ids, e);
  const PermutePlan plang = make_permute_plan(ids.to(kGpu), e);
  const std::string shape = shape_text(n * k, d);
  const auto host_vector = [](const Tensor& t) {
    const Tensor host = t.to(Device::cpu());
    return std::vector<int64_t>(host.data<int64_t>(), host.data<int64_t>() + host.numel());
  };
  expect(plang.expert_offsets == plan.expert_offsets &&
             host_vector(plang.row_of_slot_on_device) == plan.row_of_slot &&
             host_vector(plang.token_of_row_on_device) == plan.token_of_row,
         "permute plan made on the GPU (CUB radix sort) " + shape + ": the CPU's");
  Tensor xp = Tensor::empty({n * k, d}, DType::kF32),
         xpg = Tensor::empty(xp.shape(), DType::kF32, kGpu);
  permute_rows(x, plan, xp);
  permute_rows(x.to(kGpu), plang, xpg);
  expect(same_bits(xpg, xp), "permute rows " + shape + ": the CPU's bits");
  Tensor dx = Tensor::empty({n, d}, DType::kF32),
         dxg = Tensor::empty(dx.shape(), DType::kF32, kGpu);
  permute_rows_backward(yp, plan, dx);
  permute_rows_backward(yp.to(kGpu), plang, dxg);
  expect_close("permute backward " + shape, dxg, dx, 1e-6);
  Tensor y = Tensor::empty({n, d}, DType::kF32), yg = Tensor::empty(y.shape(), DType::kF32, kGpu);
  unpermute_weighted(yp, w, plan, y);
  unpermute_weighted(yp.to(kGpu), w.to(kGpu), plang, yg);
  expect_close("unpermute weighted " + shape, yg, y, 1e-6);
  Tensor dyp = Tensor::empty(yp.shape(), DType::kF32), dw = Tensor::empty(w.shape(), DType::kF32);
  Tensor dypg = Tensor::empty(yp.shape(), DType::kF32, kGpu);
  Tensor dwg = Tensor::empty(w.shape(), DType::kF32, kGpu);
  unpermute_weighted_backward(dy, yp, w, plan, dyp, dw);
  unpermute_weighted_backward(dy.to(kGpu), yp.to(kGpu), w.to(kGpu), plang, dypg, dwg);
  expect(same_bits(dypg, dyp), "unpermute backward, row gradients " + shape + ": the CPU's bits");
  expect_close("unpermute backward, gate gradients " + shape, dwg, dw, 1e-5);
  // Rows of 3 bytes take the byte-wise gather.
  Tensor bytes = Tensor::empty({n, 3}, DType::kU8),
         gathered = Tensor::empty({n * k, 3}, DType::kU8);
  for (int64_t i = 0; i < bytes.numel(); ++i)
    bytes.data<uint8_t>()[i] = static_cast<uint8_t>(i * 31);
  Tensor gatheredg = Tensor::empty(gathered.shape(), DType::kU8, kGpu);
  gather_rows(bytes, plan.token_of_row, gathered);
  gather_rows(bytes.to(kGpu), plan.token_of_row, gatheredg);
  expect(same_bits(gatheredg, gathered),
         "gather of 3-byte rows " + shape_text(n * k, 3) + ": the CPU's bits");
}

// Expert ids out of range are refused on the GPU as on the CPU, with how many there were.
void check_permute_refusals() {
  Tensor ids = Tensor::zeros({5, 2}, DType::kI32);
  ids.data<int32_t>()[3] = 8, ids.data<int32_t>()[7] = -1;
  std::string message;
  try {
    make_permute_plan(ids.to(kGpu), 8);
  } catch (const Error& e) {
    message = e.what();
  }
  expect(message.find("2 of 10 expert ids on cuda:0 are outside [0, 8)") != std::string::npos,
         "permute plan on the GPU refuses ids out of range: " + message);
  const PermutePlan empty = make_permute_plan(Tensor::empty({0, 2}, DType::kI32, kGpu), 8);
  expect(empty.expert_offsets == std::vector<int64_t>(9, 0) &&
             empty.row_of_slot_on_device.numel() == 0,
         "permute plan of no tokens on the GPU: 9 zero offsets, no rows");
}

void check_conversions(int64_t rows, int64_t cols, uint32_t seed, int64_t offset = 0) {
  Tensor x = random_tensor({rows, cols}, seed, -1e4f, 1e4f);
  x.data<float>()[0] = NAN;
  const std::string shape = shape_text(rows, cols) + at_offset(offset);
  Tensor b = Tensor::empty(x.shape(), DType::kBF16),
         bg = on_gpu(Tensor::zeros(x.shape(), DType::kBF16), offset);
  convert(x, b);
  convert(on_gpu(x, offset), bg);
  expect(same_bits(bg, b), "fp32 -> bf16 " + shape + " (NaN kept): the CPU's bits");
  Tensor f = Tensor::empty(x.shape(), DType::kF32),
         fg = on_gpu(Tensor::zeros(x.shape(), DType::kF32), offset);
  convert(b, f);
  convert(on_gpu(b, offset), fg);
  expect(same_bits(fg, f), "bf16 -> fp32 " + shape + ": the CPU's bits");
  const QuantizeOptions options;
  const BlockScaledFp8 q = quantize(x.rows(1, rows), ScaleGranularity::kBlock128x128, options);
  const BlockScaledFp8 t = transpose_blocks(q);
  const BlockScaledFp8 tg = transpose_blocks(
      quantize(x.to(kGpu).rows(1, rows), ScaleGranularity::kBlock128x128, options));
  expect(same_bits(tg.codes, t.codes) && same_bits(tg.scales, t.scales),
         "fp8 transpose_blocks " + shape_text(rows - 1, cols) + ": the CPU's codes and scales");
}

}  // namespace

int main() {
  if (gpu_check::skipped_without_gpu("kernel_check")) return 0;
  uint32_t seed = 7;
  for (const auto& [n, d] :
       {std::pair<int64_t, int64_t>{1, 7}, {64, 256}, {333, 1000}, {512, 7168}})
    check_rmsnorm(n, d, seed += 10);
  check_rmsnorm(64, 256, seed += 10, 1);  // widths of 4s at unaligned addresses: the scalar loops
  for (const auto& [n, f] : {std::pair<int64_t, int64_t>{1, 3}, {128, 96}, {1000, 2048}})
    check_swiglu(n, f, seed += 10);
  check_swiglu(128, 96, seed += 10, 1);
  for (const int64_t n : {1, 4, 1023, 1 << 20}) check_adamw(n, seed += 10);
  for (const auto& [n, vocab, d] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 1, 5}, {512, 256, 128}, {4096, 1000, 7168}})
    check_embedding(n, vocab, d, seed += 10);
  check_embedding(512, 256, 128, seed += 10, 1);
  for (const auto& [n, v] : {std::pair<int64_t, int64_t>{1, 2}, {64, 256}, {300, 32000}})
    check_cross_entropy(n, v, seed += 10);
  for (const int64_t n : {1, 1000, 1 << 22}) check_elementwise(n, seed += 10);
  check_elementwise(1000, seed += 10, 1);
  check_rope(1, 1, 1, 2, seed += 10);
  check_rope(2, 128, 4, 32, seed += 10);
  check_rope(4, 4096, 16, 128, seed += 10);
  for (const auto& [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                                   {3, 17, 5},
                                   {256, 128, 384},
                                   {1000, 2048, 512}})
    for (const DType operands : {DType::kF32, DType::kBF16})
      check_linear(n, in, out, operands, seed += 10);
  check_attention(1, 1, 1, 2, seed += 10);
  check_attention(2, 37, 3, 16, seed += 10);
  check_attention(4, 128, 4, 32, seed += 10);
  check_attention(1, 512, 2, 64, seed += 10);
  check_attention(2, 300, 2, 40, seed += 10);  // heads of 40 columns: lanes with one or two each
  check_attention(1, 65, 1, 256, seed += 10);  // the fused kernels' widest head
  check_router(1, 2, 1, {}, seed += 10);
  check_router(333, 8, 2, {}, seed += 10);
  check_router(1024, 64, 6, {8, 3}, seed += 10);
  check_router(256, 256, 8, {8, 4}, seed += 10);
  check_permute(1, 4, 1, 8, seed += 10);
  check_permute(300, 8, 2, 128, seed += 10);
  check_permute(1024, 64, 6, 7, seed += 10);
  check_permute(4096, 256, 8, 16, seed += 10);  // DeepSeek-V3's routing: 256 experts, top 8
  check_permute_refusals();
  check_conversions(3, 5, seed += 10);  // 15 values: the scalar loops
  check_conversions(129, 300, seed += 10);
  check_conversions(129, 300, seed += 10, 1);
  check_conversions(1024, 1024, seed += 10);
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
  expect_refused("fp8 payload packing on CUDA (no CUDA kernel yet)", "has no kernel for cuda:0",
                 [&] {
                   pack_fp8_rows(quantize(random_tensor({4, 256}, 9).to(kGpu),
                                          ScaleGranularity::kTile1x128, QuantizeOptions{}));
                 });
  std::printf("kernel_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
