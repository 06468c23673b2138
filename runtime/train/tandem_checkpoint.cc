// tandem-checkpoint: checks and exports the checkpoints tandem-train writes.
//   tandem-checkpoint verify PATH      (a checkpoint, or a directory of them: each one is checked)
//   tandem-checkpoint export PATH OUT.safetensors [--dtype f32|bf16]
//                                      (the full model's parameters by global name, in one file;
//                                      PATH a checkpoint, or a directory: its newest valid one)
// Exit codes: 0 every checkpoint checked is valid; 1 one is not (each is named with the reason);
// 2 usage (bad arguments, nothing to check at PATH, an output path that cannot be written).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "comm/faults.h"
#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"
#include "runtime/train/checkpoint.h"

namespace {

constexpr const char* kUsage =
    "usage: tandem-checkpoint verify PATH\n"
    "       tandem-checkpoint export PATH OUT.safetensors [--dtype f32|bf16]\n"
    "PATH is one checkpoint (step-NNNNNNNN) or a checkpoint.dir holding several.\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "tandem-checkpoint: %s\n%s", message.c_str(), kUsage);
  return tandem::comm::kUsageExitCode;
}

// The checkpoints PATH names: itself, or every one under it, newest first.
std::vector<std::string> checkpoints_at(const std::string& path) {
  if (tandem::is_checkpoint(path)) return {path};
  std::vector<std::string> all = tandem::list_checkpoints(path);
  if (all.empty())
    throw tandem::UsageError(
        "'" + path + "' is neither a checkpoint nor a directory holding any (step-NNNNNNNN)");
  return all;
}

int verify(const std::string& path) {
  int bad = 0;
  for (const std::string& checkpoint : checkpoints_at(path)) {
    try {
      const nlohmann::json manifest = tandem::verify_checkpoint(checkpoint);
      std::printf("%s: valid: step %lld, %zu shards, %zu parameters, grid %s\n", checkpoint.c_str(),
                  static_cast<long long>(manifest["step"].get<int64_t>()),
                  manifest["shards"].size(), manifest["parameters"].size(),
                  manifest["grid"].dump().c_str());
    } catch (const tandem::Error& e) {
      std::printf("%s: INVALID: %s\n", checkpoint.c_str(), e.what());
      ++bad;
    }
  }
  return bad ? tandem::comm::kOtherErrorExitCode : tandem::comm::kSuccessExitCode;
}

int export_model(const std::string& path, const std::string& out, tandem::DType dtype) {
  try {
    tandem::check_output_path("export output", out);
  } catch (const tandem::Error& e) {
    throw tandem::UsageError(e.what());
  }
  // The newest checkpoint that verifies (export verifies as it reads: one pass over the shards).
  std::string used, why_not;
  std::optional<tandem::safetensors::FileImage> file;
  int64_t elements = 0;
  for (const std::string& checkpoint : checkpoints_at(path)) {
    try {
      file = tandem::export_parameters(checkpoint, dtype, &elements);
      used = checkpoint;
      break;
    } catch (const tandem::Error& e) {
      std::fprintf(stderr, "tandem-checkpoint: skipping %s: %s\n", checkpoint.c_str(), e.what());
      why_not = e.what();
    }
  }
  TANDEM_USER_CHECK(file, "no valid checkpoint at '", path, "': ", why_not);
  // Writing into the checkpoint being read would replace one of its files.
  std::error_code ec;
  const auto out_dir =
      std::filesystem::weakly_canonical(std::filesystem::path(out), ec).parent_path();
  if (out_dir == std::filesystem::weakly_canonical(used, ec))
    throw tandem::UsageError("the export output '" + out + "' is inside the checkpoint " + used +
                             " it reads; write it elsewhere");
  const std::string_view bytes = file->image();
  tandem::write_output_file("export output", out, bytes);
  std::printf("exported %s: %lld parameters (%s) to %s, %zu bytes\n", used.c_str(),
              static_cast<long long>(elements), dtype == tandem::DType::kBF16 ? "BF16" : "F32",
              out.c_str(), bytes.size());
  return tandem::comm::kSuccessExitCode;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? tandem::comm::kUsageExitCode : 0;
  }
  try {
    if (args[0] == "verify") {
      if (args.size() != 2) return usage_error("verify takes one PATH");
      return verify(args[1]);
    }
    if (args[0] == "export") {
      tandem::DType dtype = tandem::DType::kF32;
      std::vector<std::string> paths;
      for (size_t i = 1; i < args.size(); ++i) {
        if (args[i] == "--dtype" || args[i].starts_with("--dtype=")) {
          std::string name;
          if (args[i] == "--dtype") {
            if (i + 1 >= args.size()) return usage_error("--dtype needs a value");
            name = args[++i];
          } else {
            name = args[i].substr(8);
          }
          if (name == "f32" || name == "F32" || name == "fp32") {
            dtype = tandem::DType::kF32;
          } else if (name == "bf16" || name == "BF16") {
            dtype = tandem::DType::kBF16;
          } else {
            return usage_error("--dtype '" + name + "': expected f32 or bf16");
          }
        } else if (args[i].starts_with("-")) {
          return usage_error("unknown option '" + args[i] + "'");
        } else {
          paths.push_back(args[i]);
        }
      }
      if (paths.size() != 2) return usage_error("export takes PATH and OUT.safetensors");
      return export_model(paths[0], paths[1], dtype);
    }
    return usage_error("unknown command '" + args[0] + "'");
  } catch (const tandem::UsageError& e) {
    return usage_error(e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem-checkpoint: error: %s\n", e.what());
    return tandem::comm::kOtherErrorExitCode;
  }
}
