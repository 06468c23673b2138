// GPU check of the CUDA kernels beside FP8 (scripts/gpu-check runs it on a GPU machine; CI
// builds it, and without a GPU it says it skipped): RMSNorm forward / dgrad / wgrad, SwiGLU
// forward / backward and AdamW, each against the CPU reference on the same random inputs, to
// fp32 rounding (reductions run in another order; expf may differ in the last bit). Then the
// device checks at kernel entries: tensors on two devices are refused, and so is a CUDA tensor
// given to a kernel that has no CUDA implementation yet.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "kernels/activation.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "kernels/rope.h"
#include "runtime/core/device.h"

using namespace tandem;
using namespace tandem::kernels;

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  failures += !ok;
}

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

}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::printf("kernel_check: no CUDA device here (%s): skipped (built and linked)\n",
                device_unavailable_reason(DeviceType::kCUDA).c_str());
    return 0;
  }
  uint32_t seed = 7;
  for (const auto& [n, d] :
       {std::pair<int64_t, int64_t>{1, 7}, {64, 256}, {333, 1000}, {512, 7168}})
    check_rmsnorm(n, d, seed += 10);
  for (const auto& [n, f] : {std::pair<int64_t, int64_t>{1, 3}, {128, 96}, {1000, 2048}})
    check_swiglu(n, f, seed += 10);
  for (const int64_t n : {1, 4, 1023, 1 << 20}) check_adamw(n, seed += 10);
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
  Tensor qkv = Tensor::zeros({2 * 4, 3 * 8}, DType::kF32, kGpu);
  expect_refused("rope on CUDA (no CUDA kernel yet)", "has no kernel for cuda:0",
                 [&] { rope_apply(qkv, 4, 2, 10000, false); });
  std::printf("kernel_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
