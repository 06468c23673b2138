// A program that trains with tandem in its own process (the public API, tandem/tandem.h): a
// config file plus overrides, optionally its own data (a learnable synthetic sequence instead of
// data.path), a line per step from a callback, a learning-rate change and a checkpoint requested
// from code, and the checkpoint's parameters read back by name.
//   embed_train CONFIG.toml [--synthetic] [--steer] [section.key=value]...
// Run it alone, or one process per rank under mpirun/srun/torchrun as tandem-train is.
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <tandem/tandem.h>

namespace {

// Sequence s of batch b: a walk t -> (5t + 3) mod vocab from a start that is a pure function of
// (split, b, s), so the next token is always predictable and the loss can fall towards zero.
class SyntheticWalk final : public tandem::DataSource {
 public:
  explicit SyntheticWalk(int vocab) : vocab_(vocab) {}
  void sequence(tandem::Split split, int64_t step, int64_t sequence,
                std::span<int32_t> tokens) const override {
    uint64_t start = static_cast<uint64_t>(step) * 1000003u +
                     static_cast<uint64_t>(sequence) * 7919u +
                     (split == tandem::Split::kTrain ? 0u : 17u);
    int32_t t = static_cast<int32_t>(start % static_cast<uint64_t>(vocab_));
    for (int32_t& token : tokens) {
      token = t;
      t = (5 * t + 3) % vocab_;
    }
  }

 private:
  int vocab_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: embed_train CONFIG.toml [--synthetic] [--steer] [key=value]...\n");
    return 2;
  }
  try {
    tandem::RunConfig config = tandem::RunConfig::from_file(argv[1]);
    bool synthetic = false, steer = false;
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--synthetic") == 0)
        synthetic = true;
      else if (std::strcmp(argv[i], "--steer") == 0)
        steer = true;
      else
        config.set(argv[i]);  // section.key=value, as tandem-train's --set
    }
    tandem::Run run(config, {.label = argv[1]});
    if (synthetic)
      run.set_data_source(
          std::make_shared<SyntheticWalk>(std::stoi(config.get("model.vocab_size"))));
    const bool rank0 = run.rank() == 0;
    // Steering from code (rank 0 only): halve the rate after step 2 and save after step 3; the
    // replies are waited for after run(), never inside the callback that holds the boundary.
    std::optional<tandem::ControlReply> lr_change, saved;
    run.on_step([&](const tandem::StepInfo& s) {
      if (rank0)
        std::printf("embed_train: step %lld loss %.17g lr %.3e grad norm %.4f\n",
                    static_cast<long long>(s.step), s.loss, s.learning_rate, s.grad_norm);
      if (steer && rank0 && s.step == 2) lr_change = run.set_learning_rate(s.learning_rate / 2);
      if (steer && rank0 && s.step == 3) saved = run.checkpoint();
    });
    const tandem::RunSummary summary = run.run();
    if (!rank0) return 0;
    std::printf(
        "embed_train: tandem %s: %lld steps, first loss %.6f, last loss %.6f, %lld parameters\n",
        tandem::version(), static_cast<long long>(summary.steps), summary.losses.front(),
        summary.losses.back(), static_cast<long long>(summary.params));
    if (lr_change) {
      const tandem::ControlResult r = lr_change->wait();
      std::printf("embed_train: set_learning_rate: %s, applied from step %lld\n",
                  r.ok ? "ok" : r.message.c_str(), static_cast<long long>(r.step));
    }
    if (saved) {
      const tandem::ControlResult r = saved->wait();
      std::printf("embed_train: checkpoint: %s %s (step %lld)\n", r.ok ? "ok" : r.message.c_str(),
                  r.path.c_str(), static_cast<long long>(r.step));
      if (r.ok) {
        const auto parameters = tandem::load_parameters(r.path);
        size_t values = 0;
        for (const auto& [name, p] : parameters) values += p.values.size();
        std::printf("embed_train: %zu parameters by name, %zu values (%s ...)\n", parameters.size(),
                    values, parameters.begin()->first.c_str());
      }
    }
    return 0;
  } catch (const tandem::UsageError& e) {
    std::fprintf(stderr, "embed_train: %s\n", e.what());
    return 2;
  } catch (const tandem::Error& e) {
    std::fprintf(stderr, "embed_train: %s\n", e.what());
    return 1;
  }
}
