// tandemctl: the operator's client of a running job's control service (control.proto).
//   tandemctl [--addr HOST:PORT] [--token-file FILE] [--timeout-s S] COMMAND
//   status [--json] | watch [--count N] | pause | resume | checkpoint | set-lr RATE | stop
// Every failure is one line on stderr and a non-zero exit: 2 for a usage error, 3 when the
// service cannot be reached, 1 when it refused or failed the call.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "monitoring/control_token.h"
#include "monitoring/proto/control.grpc.pb.h"
#include "runtime/core/errors.h"
#include "runtime/core/text_format.h"

namespace {

namespace pb = ::tandem::control::v1;

constexpr int kDefaultPort = 29600;
constexpr int kRefusedExitCode = 1, kUsageExitCode = 2, kUnreachableExitCode = 3;

constexpr const char* kUsage =
    "usage: tandemctl [--addr HOST:PORT] [--token-file FILE] [--timeout-s S] COMMAND\n"
    "  status [--json]    state, step, loss, learning rate, speed, ETA, each rank's step time\n"
    "  watch [--count N]  a live view redrawn after every step until the job ends (N: stop\n"
    "                     after N updates)\n"
    "  pause              every rank waits at the next step boundary\n"
    "  resume             training goes on\n"
    "  checkpoint         a checkpoint at the next step boundary; prints it once complete\n"
    "  set-lr RATE        trains at RATE from the next step on (the schedule's shape scaled)\n"
    "  stop               stops at the next step boundary after a checkpoint; the job exits 0\n"
    "--addr: default 127.0.0.1:29600 (or TANDEM_CONTROL_ADDR); the job's control.bind and\n"
    "control.port. Commands other than status and watch need the job's token: --token-file\n"
    "FILE, else TANDEM_CONTROL_TOKEN, else ~/.tandem/control-token-PORT (where a job that was\n"
    "given no token writes the one it made).\n";

// One line, then the exit code: every way tandemctl fails ends here.
struct Failure {
  int code;
  std::string message;
};

struct Options {
  std::string addr;
  std::string token_file;
  double timeout_s = 5;  // to connect, and for status
  std::string command;
  std::string value;  // set-lr's rate, as given
  bool json = false;
  long count = 0;  // watch: 0 = until the job ends
};

int port_of(const std::string& addr) {
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return -1;
  char* end = nullptr;
  const long port = std::strtol(addr.c_str() + colon + 1, &end, 10);
  return *end || port <= 0 || port > 65535 ? -1 : static_cast<int>(port);
}

Options parse(int argc, char** argv) {
  Options o;
  bool from_env = false;
  if (const char* addr = std::getenv("TANDEM_CONTROL_ADDR"); addr && *addr) {
    o.addr = addr;
    from_env = true;
  }
  if (o.addr.empty()) o.addr = "127.0.0.1:" + std::to_string(kDefaultPort);
  auto usage = [](const std::string& why) {
    return Failure{kUsageExitCode, "tandemctl: " + why + " (tandemctl --help for usage)"};
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      const size_t n = std::strlen(flag);
      if (arg.size() > n && arg.compare(0, n, flag) == 0 && arg[n] == '=') return arg.substr(n + 1);
      if (i + 1 >= argc) throw usage(std::string(flag) + " needs a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") throw Failure{0, kUsage};
    if (arg == "--addr" || arg.starts_with("--addr=")) {
      o.addr = value("--addr");
      from_env = false;
    } else if (arg == "--token-file" || arg.starts_with("--token-file=")) {
      o.token_file = value("--token-file");
    } else if (arg == "--timeout-s" || arg.starts_with("--timeout-s=")) {
      const std::string text = value("--timeout-s");
      char* end = nullptr;
      o.timeout_s = std::strtod(text.c_str(), &end);
      if (text.empty() || *end || !(o.timeout_s > 0 && o.timeout_s <= 3600))
        throw usage("--timeout-s takes seconds in (0, 3600], got '" + text + "'");
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--count" || arg.starts_with("--count=")) {
      const std::string text = value("--count");
      char* end = nullptr;
      o.count = std::strtol(text.c_str(), &end, 10);
      if (text.empty() || *end || o.count < 1) throw usage("--count takes a number >= 1");
    } else if (o.command.empty() && !arg.starts_with("-")) {
      o.command = arg;
      // The rate may be written -1e-4: the word after set-lr is its value, whatever it looks like.
      if (o.command == "set-lr") {
        if (i + 1 >= argc) throw usage("set-lr needs a learning rate, e.g. set-lr 1e-4");
        o.value = argv[++i];
      }
    } else {
      throw usage("unexpected argument '" + arg + "'");
    }
  }
  static const char* kCommands[] = {"status",     "watch",  "pause", "resume",
                                    "checkpoint", "set-lr", "stop"};
  if (o.command.empty()) throw usage("no command given");
  if (std::find_if(std::begin(kCommands), std::end(kCommands),
                   [&](const char* c) { return o.command == c; }) == std::end(kCommands))
    throw usage("unknown command '" + o.command + "'");
  if (o.json && o.command != "status") throw usage("--json goes with status");
  if (o.count && o.command != "watch") throw usage("--count goes with watch");
  const size_t colon = o.addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || port_of(o.addr) < 0)
    throw usage(std::string(from_env ? "TANDEM_CONTROL_ADDR" : "--addr") +
                " takes HOST:PORT with a port in 1..65535, e.g. 127.0.0.1:" +
                std::to_string(kDefaultPort) + "; got '" + o.addr + "'");
  return o;
}

// The token and, for messages, where it came from ("" when there is none).
struct Token {
  std::string value, source;
};

Token find_token(const Options& o) {
  try {
    if (!o.token_file.empty())
      return {tandem::monitoring::read_token_file(o.token_file), o.token_file};
    if (std::string env = tandem::monitoring::token_from_environment(); !env.empty())
      return {std::move(env), "TANDEM_CONTROL_TOKEN"};
    if (const int port = port_of(o.addr); port > 0) {
      const std::string path = tandem::monitoring::default_token_path(port);
      std::error_code ec;
      if (std::filesystem::exists(path, ec))
        return {tandem::monitoring::read_token_file(path), path};
    }
  } catch (const std::exception& e) {
    throw Failure{kUsageExitCode, std::string("tandemctl: ") + e.what()};
  }
  return {};
}

std::string state_name(pb::State state) {
  switch (state) {
    case pb::STATE_STARTING:
      return "starting";
    case pb::STATE_RUNNING:
      return "running";
    case pb::STATE_PAUSED:
      return "paused";
    case pb::STATE_STOPPING:
      return "stopping";
    case pb::STATE_FINISHED:
      return "finished";
    default:
      return "unknown";
  }
}

// A horizontal bar of `fraction` (0..1) of `width` cells, in eighths of a cell, padded with
// spaces to `width` cells.
std::string bar(double fraction, int width) {
  static const char* kEighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  const int eighths = static_cast<int>(std::lround(std::clamp(fraction, 0.0, 1.0) * width * 8));
  std::string out;
  for (int i = 0; i < eighths / 8; ++i) out += "█";
  out += kEighths[eighths % 8];
  out.append(static_cast<size_t>(width - eighths / 8 - (eighths % 8 ? 1 : 0)), ' ');
  return out;
}

std::string sparkline(const std::deque<double>& values) {
  static const char* kLevels[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  if (values.empty()) return "";
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  std::string out;
  for (double v : values) {
    const double f = *hi > *lo ? (v - *lo) / (*hi - *lo) : 0.5;
    out += kLevels[std::clamp(static_cast<int>(f * 7.999), 0, 7)];
  }
  return out;
}

std::string status_line(const pb::Status& s) {
  char line[320];
  std::snprintf(line, sizeof line,
                "step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | %.1f ms/step "
                "| ETA %s | %s",
                static_cast<long long>(s.step()), static_cast<long long>(s.total_steps()), s.loss(),
                s.learning_rate(), s.grad_norm(), s.tokens_per_second(), s.step_seconds() * 1e3,
                tandem::format_duration_hms(s.eta_seconds()).c_str(),
                state_name(s.state()).c_str());
  return line;
}

// The lines status prints and watch redraws.
std::vector<std::string> describe(const pb::Status& s) {
  std::vector<std::string> lines{status_line(s)};
  const pb::Grid& g = s.grid();
  char text[256];
  std::snprintf(text, sizeof text, "grid: %d rank%s = pp %d x dp %d (ep %d)%s%s%s", g.world_size(),
                g.world_size() == 1 ? "" : "s", g.pp(), g.dp(), g.ep(), g.zero1() ? ", ZeRO-1" : "",
                g.schedule().empty() ? "" : ", ", g.schedule().c_str());
  lines.push_back(text);
  if (s.learning_rate_changed_at_step() > 0)
    lines.push_back("learning rate: set by an operator from step " +
                    std::to_string(s.learning_rate_changed_at_step()) +
                    " on (the schedule's shape, scaled)");
  lines.push_back(s.last_checkpoint_step() > 0
                      ? "last checkpoint: " + s.last_checkpoint_path() + " (step " +
                            std::to_string(s.last_checkpoint_step()) + ")"
                      : std::string("last checkpoint: none yet"));
  if (s.ranks_size() == 0) return lines;
  if (s.stragglers_size() > 0) {
    std::string named = "stragglers:";
    for (int r : s.stragglers()) {
      const pb::RankStatus& rank = s.ranks(r);
      named += " rank " + std::to_string(r) + (rank.host().empty() ? "" : " on " + rank.host());
      std::snprintf(text, sizeof text, " (speed %.2f of the others)", rank.relative_speed());
      named += text;
    }
    lines.push_back(named);
  }
  lines.push_back(
      "rank          step                                   compute a2a wait "
      "pipe wait sync wait (ms)");
  double slowest = 0;
  for (const auto& r : s.ranks()) slowest = std::max(slowest, r.step_seconds());
  // Many ranks: the 8 slowest, named; a job of 2048 ranks does not print 2048 bars.
  std::vector<pb::RankStatus> shown(s.ranks().begin(), s.ranks().end());
  constexpr size_t kShown = 8;
  if (shown.size() > kShown) {
    std::partial_sort(
        shown.begin(), shown.begin() + kShown, shown.end(),
        [](const auto& a, const auto& b) { return a.step_seconds() > b.step_seconds(); });
    lines.push_back("the " + std::to_string(kShown) + " slowest of " +
                    std::to_string(s.ranks_size()) + " ranks:");
    shown.resize(kShown);
  }
  for (const auto& r : shown) {
    std::snprintf(text, sizeof text, "rank %-4d %8.1f ms ", r.rank(), r.step_seconds() * 1e3);
    std::string line = text + bar(slowest > 0 ? r.step_seconds() / slowest : 0, 30);
    std::snprintf(text, sizeof text, " %8.1f %8.1f %9.1f %9.1f%s", r.compute_seconds() * 1e3,
                  r.all_to_all_wait_seconds() * 1e3, r.pipeline_wait_seconds() * 1e3,
                  r.sync_wait_seconds() * 1e3, r.straggler() ? "  straggler" : "");
    lines.push_back(line + text);
  }
  return lines;
}

nlohmann::json to_json(const pb::Status& s) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& r : s.ranks())
    ranks.push_back({{"rank", r.rank()},
                     {"host", r.host()},
                     {"step_seconds", r.step_seconds()},
                     {"compute_seconds", r.compute_seconds()},
                     {"all_to_all_wait_seconds", r.all_to_all_wait_seconds()},
                     {"pipeline_wait_seconds", r.pipeline_wait_seconds()},
                     {"sync_wait_seconds", r.sync_wait_seconds()},
                     {"relative_speed", r.relative_speed()},
                     {"straggler", r.straggler()},
                     {"last_heard_seconds_ago", r.last_heard_seconds_ago()}});
  const pb::Grid& g = s.grid();
  return {{"step", s.step()},
          {"total_steps", s.total_steps()},
          {"loss", s.loss()},
          {"learning_rate", s.learning_rate()},
          {"grad_norm", s.grad_norm()},
          {"tokens_per_second", s.tokens_per_second()},
          {"step_seconds", s.step_seconds()},
          {"eta_seconds", s.eta_seconds()},
          {"paused", s.paused()},
          {"state", state_name(s.state())},
          {"grid",
           {{"world_size", g.world_size()},
            {"pp", g.pp()},
            {"dp", g.dp()},
            {"ep", g.ep()},
            {"zero1", g.zero1()},
            {"schedule", g.schedule()}}},
          {"ranks", ranks},
          {"stragglers", std::vector<int>(s.stragglers().begin(), s.stragglers().end())},
          {"last_checkpoint_step", s.last_checkpoint_step()},
          {"last_checkpoint_path", s.last_checkpoint_path()},
          {"learning_rate_changed_at_step", s.learning_rate_changed_at_step()}};
}

class Client {
 public:
  explicit Client(const Options& o) : options_(o) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);  // 127.0.0.1 through an http_proxy would fail
    channel_ = grpc::CreateCustomChannel(o.addr, grpc::InsecureChannelCredentials(), args);
    if (!channel_->WaitForConnected(deadline()))
      throw Failure{kUnreachableExitCode,
                    "tandemctl: cannot reach the control service at " + o.addr + " within " +
                        seconds_text(o.timeout_s) + ": is the job running with control.port = " +
                        std::to_string(port_of(o.addr)) +
                        " (and control.bind reachable from here)? Give --addr HOST:PORT"};
    stub_ = pb::Control::NewStub(channel_);
  }

  pb::Status status() {
    grpc::ClientContext context;
    context.set_deadline(deadline());
    pb::Status reply;
    check(stub_->GetStatus(&context, pb::GetStatusRequest(), &reply), "status");
    return reply;
  }

  // Reads the stream until the job ends (or `count` updates); calls `show` with each.
  template <class Show>
  void watch(long count, Show show) {
    grpc::ClientContext context;
    auto reader = stub_->WatchStatus(&context, pb::WatchStatusRequest());
    pb::Status message;
    long seen = 0;
    while (reader->Read(&message)) {
      show(message);
      if (count && ++seen >= count) {
        context.TryCancel();
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    if (!(count && seen >= count)) check(status, "watch");
  }

  // A command: authorised, no deadline (it is answered at the job's next step boundary).
  template <class Request, class Reply, class Call>
  Reply command(const char* name, Call call) {
    grpc::ClientContext context;
    token_ = find_token(options_);
    if (!token_.value.empty()) context.AddMetadata("authorization", "Bearer " + token_.value);
    Reply reply;
    check((stub_.get()->*call)(&context, Request(), &reply), name);
    return reply;
  }

  pb::SetLearningRateReply set_learning_rate(double rate) {
    grpc::ClientContext context;
    token_ = find_token(options_);
    if (!token_.value.empty()) context.AddMetadata("authorization", "Bearer " + token_.value);
    pb::SetLearningRateRequest request;
    request.set_learning_rate(rate);
    pb::SetLearningRateReply reply;
    check(stub_->SetLearningRate(&context, request, &reply), "set-lr");
    return reply;
  }

 private:
  std::chrono::system_clock::time_point deadline() const {
    return std::chrono::system_clock::now() +
           std::chrono::milliseconds(static_cast<long long>(options_.timeout_s * 1000));
  }
  static std::string seconds_text(double s) {
    char text[32];
    std::snprintf(text, sizeof text, "%g s", s);
    return text;
  }

  void check(const grpc::Status& status, const char* what) const {
    if (status.ok()) return;
    std::string line = "tandemctl: " + std::string(what);
    switch (status.error_code()) {
      case grpc::StatusCode::UNAUTHENTICATED:
        line +=
            " refused: " + status.error_message() +
            (token_.source.empty() ? " [tandemctl found no token: give --token-file FILE or set "
                                     "TANDEM_CONTROL_TOKEN]"
                                   : " [token from " + token_.source + "]");
        break;
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::FAILED_PRECONDITION:
        line += " refused: " + status.error_message();
        break;
      case grpc::StatusCode::UNAVAILABLE:
        line += " failed: the control service at " + options_.addr +
                " went away or is unavailable (" + status.error_message() + ")";
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        line += " failed: no answer from " + options_.addr + " within " +
                seconds_text(options_.timeout_s) + " (raise --timeout-s)";
        break;
      default:
        line += " failed: " + status.error_message();
    }
    throw Failure{kRefusedExitCode, line};
  }

  const Options& options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Control::Stub> stub_;
  Token token_;
};

int run(const Options& o) {
  Client client(o);
  const std::string& c = o.command;
  if (c == "status") {
    const pb::Status s = client.status();
    if (o.json) {
      std::printf("%s\n", to_json(s).dump().c_str());
    } else {
      for (const std::string& line : describe(s)) std::printf("%s\n", line.c_str());
    }
  } else if (c == "watch") {
    const bool terminal = ::isatty(STDOUT_FILENO) == 1;
    std::deque<double> losses;
    int64_t last_step = -1;
    client.watch(o.count, [&](const pb::Status& s) {
      if (s.step() != last_step && s.step() > 0) {
        losses.push_back(s.loss());
        if (losses.size() > 60) losses.pop_front();
        last_step = s.step();
      }
      if (!terminal) {  // a file or a pipe: one line per update, nothing to redraw
        std::printf("%s\n", status_line(s).c_str());
      } else {
        std::string frame = "\033[H\033[J";  // home, clear: the view redrawn in place
        frame += "tandem job at " + o.addr + " (Ctrl-C leaves; the job goes on)\n";
        for (const std::string& line : describe(s)) frame += line + "\n";
        char text[96];
        std::snprintf(text, sizeof text, " last %zu steps: %.4f .. %.4f", losses.size(),
                      losses.empty() ? 0.0 : *std::min_element(losses.begin(), losses.end()),
                      losses.empty() ? 0.0 : *std::max_element(losses.begin(), losses.end()));
        frame += "loss " + sparkline(losses) + text + "\n";
        std::fputs(frame.c_str(), stdout);
      }
      std::fflush(stdout);
    });
    if (!o.count) std::printf("the job has ended\n");
  } else if (c == "pause") {
    const auto r =
        client.command<pb::PauseRequest, pb::PauseReply>("pause", &pb::Control::Stub::Pause);
    std::printf(r.changed() ? "paused after step %lld\n" : "already paused after step %lld\n",
                static_cast<long long>(r.step()));
  } else if (c == "resume") {
    const auto r =
        client.command<pb::ResumeRequest, pb::ResumeReply>("resume", &pb::Control::Stub::Resume);
    std::printf(r.changed() ? "resumed after step %lld\n" : "not paused (at step %lld)\n",
                static_cast<long long>(r.step()));
  } else if (c == "checkpoint") {
    const auto r = client.command<pb::CheckpointRequest, pb::CheckpointReply>(
        "checkpoint", &pb::Control::Stub::Checkpoint);
    std::printf("checkpoint %s complete (step %lld)\n", r.path().c_str(),
                static_cast<long long>(r.step()));
  } else if (c == "set-lr") {
    char* end = nullptr;
    const double rate = std::strtod(o.value.c_str(), &end);
    // Parsed here, judged by the job: NaN, infinities and negatives go through to be refused.
    if (o.value.empty() || *end)
      throw Failure{kUsageExitCode, "tandemctl: set-lr: '" + o.value + "' is not a number"};
    const auto r = client.set_learning_rate(rate);
    std::printf("learning rate %g from step %lld on (the schedule had %.3e there)\n", rate,
                static_cast<long long>(r.applied_at_step()), r.previous_learning_rate());
  } else if (c == "stop") {
    const auto r = client.command<pb::StopRequest, pb::StopReply>("stop", &pb::Control::Stub::Stop);
    if (r.checkpoint_path().empty())
      std::printf("stopped after step %lld (no checkpoint: checkpoint.dir is not set)\n",
                  static_cast<long long>(r.step()));
    else
      std::printf("stopped after step %lld; final checkpoint %s\n",
                  static_cast<long long>(r.step()), r.checkpoint_path().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const Failure& f) {
    std::fputs((f.message + (f.message.ends_with("\n") ? "" : "\n")).c_str(),
               f.code == 0 ? stdout : stderr);
    return f.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandemctl: %s\n", e.what());
    return kRefusedExitCode;
  }
}
