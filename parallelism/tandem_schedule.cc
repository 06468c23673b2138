// tandem-schedule: generates a pipeline schedule, simulates it with given costs and reports the
// bubble, the makespan and the peak activations; optionally prints the instruction lists and
// draws the timeline as an SVG.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "parallelism/schedule.h"
#include "parallelism/schedule_simulator.h"
#include "parallelism/schedule_svg.h"
#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"

namespace {

using namespace tandem;
using namespace tandem::parallel;

constexpr const char* kUsage =
    "usage: tandem-schedule --schedule KIND --pp N --microbatches M\n"
    "                       [--f X] [--b X] [--w X] [--fb X] [--comm X] [--print] [--svg PATH]\n"
    "  --schedule KIND     1f1b, zb-h1, dualpipe or dualpipev\n"
    "  --pp N              pipeline ranks\n"
    "  --microbatches M    micro-batches per step (over both directions for dualpipe)\n"
    "  --f X               cost of a forward chunk (default 1)\n"
    "  --b X               cost of a full backward chunk, input + weight gradient (default 2)\n"
    "  --w X               cost of the weight-gradient part of --b (default 1)\n"
    "  --fb X              cost of an overlapped forward+backward pair (default f + b)\n"
    "  --comm X            cost of each pipeline message between ranks (default 0)\n"
    "  --print             print each rank's instruction list, one line per rank\n"
    "  --svg PATH          draw the simulated timeline into PATH\n"
    "  --help              this text\n";

// A bad command line (tandem::UsageError) is printed as "tandem-schedule: error: ..." with the
// usage, and exit status 2.
using tandem::UsageError;

struct Arguments {
  std::string schedule;
  int pp = 0;
  int64_t microbatches = 0;
  bool pp_given = false;
  bool microbatches_given = false;
  ScheduleCosts costs;
  bool print = false;
  std::string svg_path;
};

template <class Number>
Number parse_number(const std::string& flag, const std::string& text, const char* expected) {
  Number value{};
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || stop != end) {
    throw UsageError{flag + ": '" + text + "' is not " + expected + "; give e.g. " + flag +
                     (std::is_integral_v<Number> ? " 4" : " 1.5")};
  }
  return value;
}

double parse_cost(const std::string& flag, const std::string& text) {
  const double value = parse_number<double>(flag, text, "a number");
  if (!std::isfinite(value) || value < 0) {
    throw UsageError{flag + ": " + text + " must be a finite number >= 0"};
  }
  return value;
}

Arguments parse_arguments(int argc, char** argv) {
  Arguments args;
  bool fb_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string inline_value;
    bool has_inline_value = false;
    if (const size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline_value = true;
    }
    auto value = [&]() -> std::string {
      if (has_inline_value) return inline_value;
      if (i + 1 >= argc) throw UsageError{arg + " needs a value; see --help"};
      return argv[++i];
    };
    auto no_value = [&] {
      if (has_inline_value) throw UsageError{arg + " takes no value; write just " + arg};
    };
    if (arg == "--schedule") {
      args.schedule = value();
    } else if (arg == "--pp") {
      args.pp = parse_number<int>(arg, value(), "an integer");
      args.pp_given = true;
    } else if (arg == "--microbatches") {
      args.microbatches = parse_number<int64_t>(arg, value(), "an integer");
      args.microbatches_given = true;
    } else if (arg == "--f") {
      args.costs.f = parse_cost(arg, value());
    } else if (arg == "--b") {
      args.costs.b = parse_cost(arg, value());
    } else if (arg == "--w") {
      args.costs.w = parse_cost(arg, value());
    } else if (arg == "--fb") {
      args.costs.fb = parse_cost(arg, value());
      fb_given = true;
    } else if (arg == "--comm") {
      args.costs.comm = parse_cost(arg, value());
    } else if (arg == "--print") {
      no_value();
      args.print = true;
    } else if (arg == "--svg") {
      args.svg_path = value();
    } else {
      throw UsageError{"unknown option '" + arg + "'; see --help for the options"};
    }
  }
  if (args.schedule.empty()) {
    throw UsageError{"--schedule is missing; give one of 1f1b, zb-h1, dualpipe, dualpipev"};
  }
  if (!args.pp_given) throw UsageError{"--pp is missing; give the number of pipeline ranks"};
  if (!args.microbatches_given) {
    throw UsageError{"--microbatches is missing; give the number of micro-batches per step"};
  }
  // The lists and the simulation hold a few instructions per (rank, micro-batch): bounded so that
  // a typo cannot exhaust memory before anything is printed.
  constexpr int64_t kMaxInstructions = int64_t{1} << 24;
  if (args.pp > 0 && args.microbatches > 0 &&
      (args.pp > 65536 || args.microbatches > kMaxInstructions ||
       int64_t{args.pp} * args.microbatches > kMaxInstructions)) {
    throw UsageError{tandem::detail::concat(
        "--pp ", args.pp, " × --microbatches ", args.microbatches,
        " is more than this tool simulates (pp at most 65536, pp × micro-batches at most 2^24); "
        "lower --pp or --microbatches")};
  }
  if (args.costs.w > args.costs.b) {
    throw UsageError{tandem::detail::concat(
        "--w ", args.costs.w, " exceeds --b ", args.costs.b,
        ": --b is the full backward, of which --w is the weight part; lower --w or raise --b")};
  }
  if (fb_given && args.costs.fb == 0) {
    throw UsageError{"--fb must be > 0; leave it out to mean f + b"};
  }
  return args;
}

int run(const Arguments& args) {
  ScheduleKind kind;
  try {
    kind = parse_choice<ScheduleKind>(args.schedule, "--schedule");
  } catch (const Error& error) {
    throw UsageError{error.what()};
  }
  try {
    validate_schedule_request(kind, args.pp, args.microbatches);
  } catch (const Error& error) {
    throw UsageError{std::string("--pp ") + std::to_string(args.pp) + " --microbatches " +
                     std::to_string(args.microbatches) + ": " + error.what() +
                     "; change --pp or --microbatches"};
  }
  const Schedule schedule = make_schedule(kind, args.pp, args.microbatches);
  const SimulationResult result = simulate(schedule, args.costs);
  const ScheduleCosts& c = args.costs;

  std::printf("schedule %s, pp %d, %lld micro-batches\n", std::string(choice_name(kind)).c_str(),
              args.pp, static_cast<long long>(args.microbatches));
  std::printf("costs: F %g, B %g, W %g", c.f, c.b, c.w);
  if (schedule.layout().chunks_per_rank() == 2) std::printf(", F&B %g", c.pair_cost());
  std::printf(", comm %g\n", c.comm);
  std::printf("makespan: %g\n", result.makespan);
  std::printf("bubble: %g (idle time of the least busy rank)\n", result.bubble);
  std::printf("bubble fraction: %.4f\n", result.bubble_fraction);
  std::printf("published formula %s: %g%s\n", published_bubble_formula(kind),
              published_bubble(kind, args.pp, c), c.comm > 0 ? " (assumes comm 0)" : "");
  std::printf("peak activations per rank:");
  for (int64_t peak : result.peak_activations) std::printf(" %lld", static_cast<long long>(peak));
  std::printf("\n");
  if (args.print) std::fputs(format_schedule(schedule).c_str(), stdout);
  if (!args.svg_path.empty()) {
    write_output_file("--svg", args.svg_path, schedule_svg(schedule, result));
    std::printf("wrote %s\n", args.svg_path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  try {
    return run(parse_arguments(argc, argv));
  } catch (const UsageError& error) {
    std::fprintf(stderr, "tandem-schedule: error: %s\n%s", error.what(), kUsage);
    return 2;
  } catch (const tandem::Error& error) {
    std::fprintf(stderr, "tandem-schedule: error: %s\n", error.what());
    return 1;
  }
}
