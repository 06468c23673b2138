// tandem-train: trains the model described by a TOML config.
//   tandem-train CONFIG.toml [--set section.key=value]... [--summary-json PATH]
//   tandem-train --config-reference     (prints every configuration key as Markdown)
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/config.h"
#include "runtime/core/logging.h"
#include "runtime/core/runtime_context.h"
#include "runtime/train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: tandem-train CONFIG.toml [--set section.key=value]... [--summary-json PATH]\n"
    "       tandem-train --config-reference\n";

struct Arguments {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string summary_path;
};

Arguments parse_arguments(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      const size_t n = std::strlen(flag);
      if (arg.size() > n && arg.compare(0, n, flag) == 0 && arg[n] == '=') return arg.substr(n + 1);
      TANDEM_USER_CHECK(i + 1 < argc, flag, " needs a value\n", kUsage);
      return argv[++i];
    };
    if (arg == "--set" || arg.starts_with("--set=")) {
      args.overrides.push_back(value("--set"));
    } else if (arg == "--summary-json" || arg.starts_with("--summary-json=")) {
      args.summary_path = value("--summary-json");
    } else if (arg.starts_with("-")) {
      TANDEM_USER_CHECK(false, "unknown option '", arg, "'\n", kUsage);
    } else {
      TANDEM_USER_CHECK(args.config_path.empty(), "more than one config file given ('",
                        args.config_path, "' and '", arg, "')\n", kUsage);
      args.config_path = arg;
    }
  }
  TANDEM_USER_CHECK(!args.config_path.empty(), "no config file given\n", kUsage);
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem;
  if (argc == 2 && std::strcmp(argv[1], "--config-reference") == 0) {
    std::fputs(config_reference_markdown().c_str(), stdout);
    return 0;
  }
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Config config;
  Arguments args;
  try {
    args = parse_arguments(argc, argv);
    config = load_config_file(args.config_path);
    for (const auto& assignment : args.overrides) apply_override(config, assignment);
    validate_config(config);
    if (!args.summary_path.empty()) {
      // Checked before training, so a bad path cannot throw a finished run away.
      std::ofstream probe(args.summary_path + ".tmp");
      TANDEM_USER_CHECK(probe.good(), "cannot write the summary next to '", args.summary_path,
                        "': check that its directory exists and is writable");
      probe.close();
      std::remove((args.summary_path + ".tmp").c_str());
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-train: error: %s\n", error.what());
    return 2;
  }
  try {
    set_thread_count(config.train.threads > 0 ? static_cast<int>(config.train.threads)
                                              : default_thread_count());
    log_info("tandem-train: ", args.config_path, ", ", runtime().threads, " threads");
    log_info("effective config:\n", config_to_string(config));
    Trainer trainer(config);
    TrainSummary summary = trainer.run();
    char line[256];
    std::snprintf(line, sizeof line,
                  "summary: %lld steps | final loss %.4f | final held-out loss %.4f | %.0f tok/s | "
                  "%lld parameters | %.2f MFLOP/token",
                  static_cast<long long>(summary.steps), summary.losses.back(),
                  summary.eval_losses.back().second, summary.tokens_per_second,
                  static_cast<long long>(summary.params), summary.flops_per_token / 1e6);
    log_info(line);
    if (!args.summary_path.empty()) {
      const std::string temporary = args.summary_path + ".tmp";
      std::ofstream out(temporary);
      TANDEM_USER_CHECK(out.good(), "cannot write summary '", args.summary_path, "'");
      out << summary.to_json(config).dump(2) << "\n";
      out.close();
      TANDEM_USER_CHECK(
          out.good() && std::rename(temporary.c_str(), args.summary_path.c_str()) == 0,
          "cannot write summary '", args.summary_path, "'");
      log_info("summary written to ", args.summary_path);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-train: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
