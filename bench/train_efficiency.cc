// Training efficiency on the CPU: tandem's model FLOP/s for a config against the sgemm ceiling of
// the same machine at the same model's GEMM shapes, both measured in this run, plus where the
// step's time goes (per-kernel profile).
//   train_efficiency [CONFIG.toml] [--steps N] [--warmup N] [--set section.key=value]...
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "runtime/core/config.h"
#include "runtime/core/runtime_context.h"
#include "runtime/model/model_stats.h"
#include "runtime/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Gemm {
  const char* what;
  int m, n, k;
  bool trans_a, trans_b;
  double count;  // how many times one training step runs it
};

// Seconds per call of a row-major sgemm of this shape, best of a few timed repetitions.
double time_sgemm(const Gemm& g) {
  const int rows_a = g.trans_a ? g.k : g.m, cols_a = g.trans_a ? g.m : g.k;
  const int rows_b = g.trans_b ? g.n : g.k, cols_b = g.trans_b ? g.k : g.n;
  std::vector<float> a(static_cast<size_t>(rows_a) * cols_a, 0.5f);
  std::vector<float> b(static_cast<size_t>(rows_b) * cols_b, 0.25f);
  std::vector<float> c(static_cast<size_t>(g.m) * g.n, 0.f);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
                g.trans_b ? CblasTrans : CblasNoTrans, g.m, g.n, g.k, 1.f, a.data(), cols_a,
                b.data(), cols_b, 0.f, c.data(), g.n);
  };
  run();
  const double flops = 2.0 * g.m * g.n * g.k;
  const int reps = std::max(1, static_cast<int>(2e9 / flops));
  double best = 1e30;
  for (int trial = 0; trial < 3; ++trial) {
    const auto start = Clock::now();
    for (int r = 0; r < reps; ++r) run();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count() / reps);
  }
  return best;
}

// Every matrix product of one training step of the model, with its forward, dgrad and wgrad.
std::vector<Gemm> model_gemms(const tandem::ModelConfig& c, int64_t batch_size) {
  const int n = static_cast<int>(batch_size * c.seq_len), d = static_cast<int>(c.d_model);
  const double moe = static_cast<double>(c.n_layers - c.n_dense_layers);
  const double dense = static_cast<double>(c.n_dense_layers), layers = c.n_layers;
  const int expert_rows = static_cast<int>(n * c.top_k / c.n_routed_experts);
  struct Linear {
    const char* what;
    int rows, in, out;
    double count;
  };
  const int fe = static_cast<int>(c.d_expert),
            fs = static_cast<int>(c.d_expert * c.n_shared_experts);
  std::vector<Linear> linears = {
      {"attention qkv", n, d, 3 * d, layers},
      {"attention out", n, d, d, layers},
      {"dense w13", n, d, 2 * static_cast<int>(c.d_ff), dense},
      {"dense w2", n, static_cast<int>(c.d_ff), d, dense},
      {"router", n, d, static_cast<int>(c.n_routed_experts), moe},
      {"shared w13", n, d, 2 * fs, fs > 0 ? moe : 0},
      {"shared w2", n, fs, d, fs > 0 ? moe : 0},
      {"expert w13", expert_rows, d, 2 * fe, moe * c.n_routed_experts},
      {"expert w2", expert_rows, fe, d, moe * c.n_routed_experts},
      {"lm head", n, d, static_cast<int>(c.vocab_size), 1},
  };
  std::vector<Gemm> out;
  for (const auto& l : linears) {
    if (l.count == 0) continue;
    out.push_back({l.what, l.rows, l.out, l.in, false, true, l.count});   // y = x·Wᵀ
    out.push_back({l.what, l.rows, l.in, l.out, false, false, l.count});  // dx = dy·W
    out.push_back({l.what, l.out, l.in, l.rows, true, false, l.count});   // dW = dyᵀ·x
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem;
  std::string config_path = "examples/configs/small.toml";
  int64_t steps = 8, warmup = 2;
  std::vector<std::string> overrides;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) {
      steps = std::stoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--warmup") && i + 1 < argc) {
      warmup = std::stoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--set") && i + 1 < argc) {
      overrides.push_back(argv[++i]);
    } else {
      config_path = argv[i];
    }
  }
  try {
    Config config = load_config_file(config_path);
    for (const auto& o : overrides) apply_override(config, o);
    config.train.steps = warmup + steps;
    validate_config(config);
    set_thread_count(config.train.threads > 0
                         ? static_cast<int>(config.train.threads)
                         : default_thread_count(comm::detect_launch().local_size));
    std::printf("train_efficiency: %s, %d threads, batch %lld x %lld tokens\n", config_path.c_str(),
                runtime().threads, static_cast<long long>(config.train.batch_size),
                static_cast<long long>(config.model.seq_len));

    // 1. The sgemm ceiling: OpenBLAS on this machine at the model's own GEMM shapes.
    double gemm_flops = 0, gemm_seconds = 0;
    std::printf("\n%-14s %6s %6s %6s  %-6s %8s\n", "gemm", "m", "n", "k", "op", "GFLOP/s");
    for (const Gemm& g : model_gemms(config.model, config.train.batch_size)) {
      const double seconds = time_sgemm(g), flops = 2.0 * g.m * g.n * g.k;
      gemm_flops += flops * g.count;
      gemm_seconds += seconds * g.count;
      std::printf("%-14s %6d %6d %6d  %-6s %8.1f\n", g.what, g.m, g.n, g.k,
                  g.trans_a ? "wgrad" : (g.trans_b ? "fwd" : "dgrad"), flops / seconds / 1e9);
    }
    const double ceiling = gemm_flops / gemm_seconds;
    const double square =
        2.0 * 2048.0 * 2048.0 * 2048.0 / time_sgemm({"square", 2048, 2048, 2048, false, false, 1});
    std::printf("sgemm at the model's shapes (FLOP-weighted): %.1f GFLOP/s\n", ceiling / 1e9);
    std::printf("sgemm 2048^3 (machine peak reference):        %.1f GFLOP/s\n", square / 1e9);

    // 2. tandem training steps on the same model.
    Trainer trainer(config);
    for (int64_t s = 0; s < warmup; ++s) trainer.train_step(s);
    profiler().reset();
    profiler().set_enabled(true);
    const auto start = Clock::now();
    for (int64_t s = warmup; s < warmup + steps; ++s) trainer.train_step(s);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    profiler().set_enabled(false);
    const ModelStats stats = model_stats(config.model);
    const double tokens =
        static_cast<double>(config.train.batch_size * config.model.seq_len * steps);
    const double model_flops = stats.flops_per_token * tokens / seconds;

    std::printf("\nwhere a step's time goes (%lld steps, %.1f ms/step):\n",
                static_cast<long long>(steps), seconds / steps * 1e3);
    double covered = 0;
    for (const auto& e : profiler().entries()) {
      covered += e.seconds;
      std::printf("  %-30s %8.1f ms/step %5.1f%%\n", e.name.c_str(), e.seconds / steps * 1e3,
                  100 * e.seconds / seconds);
    }
    std::printf("  %-30s %8.1f ms/step %5.1f%%\n", "(outside kernels)",
                (seconds - covered) / steps * 1e3, 100 * (seconds - covered) / seconds);

    std::printf("\ntokens/s: %.0f\n", tokens / seconds);
    std::printf("model FLOP/s: %.1f GFLOP/s (%.2f MFLOP/token)\n", model_flops / 1e9,
                stats.flops_per_token / 1e6);
    std::printf("ratio model FLOP/s / sgemm at model shapes: %.3f\n", model_flops / ceiling);
    std::printf("ratio model FLOP/s / sgemm 2048^3:          %.3f\n", model_flops / square);
  } catch (const Error& error) {
    std::fprintf(stderr, "train_efficiency: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
