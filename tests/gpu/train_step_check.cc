// GPU check of the whole training step (scripts/gpu-check runs it on a GPU machine; CI builds
// it, and without a GPU it says it skipped). The model of a config (tiny.toml by default) is
// built twice from one seed, on the CPU and on the GPU:
//   - one forward and backward on the same tokens: the loss, and every parameter's gradient,
//     against the CPU run (fp32 sums in another order, so to a tolerance, not bit for bit);
//   - train.device = "cpu" and "cuda" engines over the same steps of a synthetic data source:
//     each step's loss and gradient norm, and the router's expert load, against the CPU run's;
//   - the same with FP8 (cuBLASLt's block-scaled GEMMs against the CPU's emulation: looser);
//   - the parallel engine (its data-parallel path, with and without ZeRO-1, over two micro-batches)
//     as a world of one on the GPU, against the CPU's single-process engine (a group of one
//     skips the bucket reductions: NCCL's splits and the expert-load all-reduce run);
// then benchmarks: tokens per second of GPU training steps of each config named on the command
// line, and their model FLOP/s as a fraction of an fp32 cuBLASLt GEMM measured in the same run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/world.h"
#include "kernels/linear.h"
#include "runtime/core/config.h"
#include "runtime/core/device.h"
#include "runtime/model/model_chunk.h"
#include "runtime/model/model_stats.h"
#include "runtime/train/parallel_engine.h"
#include "runtime/train/trainer.h"
#include "tests/gpu/check_report.h"

using namespace tandem;
using tandem::gpu_check::expect;
using tandem::gpu_check::failures;

namespace {

const Device kGpu = Device::cuda(0);

// A learnable stream: each token is the previous one times 5 plus 3 (mod vocab), from a start
// that depends on (split, step, sequence) only.
class ArithmeticSource final : public DataSource {
 public:
  explicit ArithmeticSource(int64_t vocab) : vocab_(vocab) {}
  void sequence(Split split, int64_t step, int64_t sequence,
                std::span<int32_t> tokens) const override {
    int64_t t = (step * 7919 + sequence * 104729 + (split == Split::kHeldOut ? 13 : 0)) % vocab_;
    for (int32_t& token : tokens) {
      token = static_cast<int32_t>(t);
      t = (t * 5 + 3) % vocab_;
    }
  }

 private:
  int64_t vocab_;
};

bool close(double gpu, double cpu, double tolerance) {
  return std::isfinite(gpu) && std::fabs(gpu - cpu) <= tolerance * std::fabs(cpu);
}

// One forward and backward of the whole model on both devices.
void check_gradients(const Config& config, double loss_tolerance, double grad_tolerance,
                     const char* label) {
  const ModelConfig& m = config.model;
  const uint64_t seed = static_cast<uint64_t>(config.train.seed);
  ModelChunk cpu(m, seed, ChunkSpec::whole_model(m), config.fp8);
  ModelChunk gpu(m, seed, ChunkSpec::whole_model(m), config.fp8, kGpu);
  const int64_t n = config.train.batch_size * m.seq_len;
  Tensor tokens = Tensor::empty({n}, DType::kI32), targets = Tensor::empty({n}, DType::kI32);
  DataLoader loader(std::make_shared<ArithmeticSource>(m.vocab_size), m.seq_len);
  loader.fill(Split::kTrain, 0, 0, config.train.batch_size, tokens, targets);
  const Pass pass = Pass::train(1.0 / static_cast<double>(n));
  MicroBatchState cpu_state, gpu_state;
  cpu.forward(tokens, cpu_state, &targets, pass);
  const Tensor gpu_targets = targets.to(kGpu);
  gpu.forward(tokens.to(kGpu), gpu_state, &gpu_targets, pass);
  char line[256];
  std::snprintf(line, sizeof line, "%s: whole-model loss sum %.9g vs CPU %.9g (bound %.0e)", label,
                gpu_state.loss_sum, cpu_state.loss_sum, loss_tolerance);
  expect(close(gpu_state.loss_sum, cpu_state.loss_sum, loss_tolerance), line);
  cpu.backward_input(Tensor(), cpu_state);
  cpu.backward_weight(cpu_state);
  gpu.backward_input(Tensor(), gpu_state);
  gpu.backward_weight(gpu_state);
  const std::vector<Parameter*> cpu_params = cpu.parameters(), gpu_params = gpu.parameters();
  double worst = 0;
  std::string worst_name;
  int bad = 0;
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const double diff =
        gpu_check::largest_relative_difference(gpu_params[i]->grad, cpu_params[i]->grad);
    if (!(diff <= grad_tolerance)) {
      ++bad;
      std::printf("  gradient of %s differs by %.2e\n", cpu_params[i]->name.c_str(), diff);
    }
    if (!(diff <= worst)) worst = diff, worst_name = cpu_params[i]->name;
  }
  std::snprintf(line, sizeof line,
                "%s: gradients of all %zu parameters: largest relative difference %.2e (%s), "
                "bound %.0e; %d over it",
                label, cpu_params.size(), worst, worst_name.c_str(), grad_tolerance, bad);
  expect(bad == 0, line);
}

using EngineFactory = std::function<std::unique_ptr<TrainEngine>(
    const Config&, const std::shared_ptr<const DataSource>&)>;

std::unique_ptr<TrainEngine> single_process(const Config& config,
                                            const std::shared_ptr<const DataSource>& source) {
  return std::make_unique<SingleProcessEngine>(config, source);
}

// Training steps on the same data: the CPU's single-process engine against the engine that
// make_gpu builds for train.device = "cuda".
void check_engines(Config config, int64_t steps, double tolerance, const char* label,
                   const EngineFactory& make_gpu = single_process) {
  config.train.steps = steps;
  const auto source = std::make_shared<ArithmeticSource>(config.model.vocab_size);
  config.train.device = DeviceType::kCPU;
  SingleProcessEngine cpu(config, source);
  config.train.device = DeviceType::kCUDA;
  const std::unique_ptr<TrainEngine> owned_gpu = make_gpu(config, source);
  TrainEngine& gpu = *owned_gpu;
  bool losses = true, norms = true, loads = true;
  for (int64_t step = 0; step < steps; ++step) {
    const StepReport a = cpu.train_step(step), b = gpu.train_step(step);
    std::printf("  %s step %lld: loss %.7f vs CPU %.7f, grad norm %.6f vs %.6f\n", label,
                static_cast<long long>(step + 1), b.loss, a.loss, b.grad_norm, a.grad_norm);
    losses = losses && close(b.loss, a.loss, tolerance);
    norms = norms && close(b.grad_norm, a.grad_norm, 10 * tolerance);
    for (size_t l = 0; l < a.expert_load.size(); ++l) {
      int64_t moved = 0, total = 0;
      for (size_t x = 0; x < a.expert_load[l].tokens.size(); ++x) {
        moved += std::abs(a.expert_load[l].tokens[x] - b.expert_load[l].tokens[x]);
        total += a.expert_load[l].tokens[x];
      }
      // Near-ties in the router may go the other way once the weights differ in the last bits.
      loads = loads && moved <= std::max<int64_t>(2, total / 100);
    }
  }
  char line[160];
  std::snprintf(line, sizeof line, "%s: %lld steps' losses within %.0e of the CPU's", label,
                static_cast<long long>(steps), tolerance);
  expect(losses, line);
  std::snprintf(line, sizeof line, "%s: gradient norms within %.0e of the CPU's", label,
                10 * tolerance);
  expect(norms, line);
  expect(loads, std::string(label) + ": expert loads within 1% of the CPU's");
  const double held_out_cpu = cpu.evaluate(), held_out_gpu = gpu.evaluate();
  std::snprintf(line, sizeof line, "%s: held-out loss %.7f vs CPU %.7f", label, held_out_gpu,
                held_out_cpu);
  expect(close(held_out_gpu, held_out_cpu, 10 * tolerance), line);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// fp32 GEMM FLOP/s through the same cuBLASLt path the model's linear layers take.
double fp32_gemm_flops() {
  const int64_t n = 8192;
  Tensor a = Tensor::zeros({n, n}, DType::kF32, kGpu), b = Tensor::zeros({n, n}, DType::kF32, kGpu);
  Tensor c = Tensor::empty({n, n}, DType::kF32, kGpu);
  kernels::linear_forward(a, b, c);
  (void)c.to(Device::cpu()).numel();  // waits
  const int reps = 5;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) kernels::linear_forward(a, b, c);
  (void)c.rows(0, 1).to(Device::cpu()).numel();
  return reps * 2.0 * n * n * n / seconds_since(start);
}

void benchmark(const std::string& path, double gemm_flops) {
  Config config = load_config_file(path);
  config.train.device = DeviceType::kCUDA;
  SingleProcessEngine engine(config, std::make_shared<ArithmeticSource>(config.model.vocab_size));
  const int64_t warmup = 2, steps = 10;
  for (int64_t step = 0; step < warmup; ++step) engine.train_step(step);
  const auto start = std::chrono::steady_clock::now();
  double loss = 0, device_seconds = 0;
  for (int64_t step = warmup; step < warmup + steps; ++step) {
    const StepReport report = engine.train_step(step);
    loss = report.loss;
    device_seconds += report.device_seconds;
  }
  const double seconds = seconds_since(start);  // each step waits for its last kernel
  const double tokens = static_cast<double>(steps * config.train.batch_size * config.model.seq_len);
  const double flops = tokens * model_stats(config.model).flops_per_token / seconds;
  std::printf(
      "bench: train step %s on the GPU: %.0f tokens/s, %.2f model TFLOP/s = %.3f of the fp32 "
      "cuBLASLt GEMM's %.2f TFLOP/s; %.2f ms/step, of which the device's span %.2f ms "
      "(loss %.4f after %lld steps)\n",
      path.c_str(), tokens / seconds, flops / 1e12, flops / gemm_flops, gemm_flops / 1e12,
      seconds / steps * 1e3, device_seconds / steps * 1e3, loss,
      static_cast<long long>(warmup + steps));
}

}  // namespace

int main(int argc, char** argv) {
  if (gpu_check::skipped_without_gpu("train_step_check")) return 0;
  const std::string base = argc > 1 ? argv[1] : "examples/configs/tiny.toml";
  try {
    Config config = load_config_file(base);
    config.train.batch_size = 4;
    check_gradients(config, 1e-5, 1e-3, "fp32");
    check_engines(config, 8, 1e-4, "fp32");
    Config fp8 = config;
    fp8.fp8.enabled = true;
    // A near-tie in a quantisation block's amax, or a code at a rounding boundary, moves a value
    // by an FP8 step: FP8's gradients are compared at its own resolution.
    check_gradients(fp8, 1e-3, 1e-1, "fp8");
    check_engines(fp8, 4, 2e-2, "fp8");
    // A world of one (no launcher: UCX's, without a store) for the parallel engine: one GPU
    // cannot hold two NCCL ranks, so its data-parallel path runs here as one rank: buckets,
    // ZeRO-1 shards, AdamW and micro-batches on the device, NCCL's communicator, its splits and
    // the expert-load all-reduce (the bucket reductions of a group of one are skipped).
    comm::World world = comm::join_world();
    for (const bool zero1 : {false, true}) {
      Config data_parallel = config;
      data_parallel.parallel.zero1 = zero1;
      data_parallel.parallel.microbatches = 2;
      check_engines(
          data_parallel, 4, 1e-4,
          zero1 ? "parallel engine, ZeRO-1, 2 micro-batches" : "parallel engine, 2 micro-batches",
          [&](const Config& c, const std::shared_ptr<const DataSource>& source) {
            ParallelEngineOptions options;
            options.data_source = source;
            return std::make_unique<ParallelEngine>(c, world, options);
          });
    }
    const double gemm = fp32_gemm_flops();
    for (int i = 1; i < argc; ++i) benchmark(argv[i], gemm);
  } catch (const std::exception& e) {
    expect(false, std::string("train_step_check stopped: ") + e.what());
  }
  std::printf("train_step_check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
