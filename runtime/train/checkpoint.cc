// Checkpoints: the manifest, writing shards (in the background) and committing them with one
// rename, loading on any grid with fallback to an older checkpoint, verifying and exporting.
#include "runtime/train/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "runtime/core/host_name.h"
#include "runtime/core/input_file.h"
#include "runtime/core/logging.h"
#include "runtime/core/owned_fd.h"
#include "runtime/model/model_stats.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/safetensors.h"

namespace tandem {

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kFormatName = "tandem-checkpoint";
// The three kinds of saved tensor, and their keys' prefixes in a shard.
constexpr const char* kParam = "param";
constexpr const char* kExpAvg = "exp_avg";
constexpr const char* kExpAvgSq = "exp_avg_sq";

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string errno_text(int error) {
  return std::strerror(error);
}

std::string xxh64_hex(std::string_view bytes) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx",
                static_cast<unsigned long long>(XXH64(bytes.data(), bytes.size(), 0)));
  return text;
}

// Makes a directory's entries (a new file, a rename) durable.
void fsync_directory(const std::string& dir) {
  OwnedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  TANDEM_USER_CHECK(fd, "checkpoint: cannot open directory '", dir, "': ", errno_text(errno));
  TANDEM_USER_CHECK(::fsync(fd.get()) == 0, "checkpoint: fsync of directory '", dir,
                    "' failed: ", errno_text(errno));
}

// Seconds a test asked the shard writes of checkpoint `step` to pause half-way, to kill the job
// in the middle of one: TANDEM_TEST_CHECKPOINT_PAUSE=STEP:SECONDS (0: no pause).
double test_pause_seconds(int64_t step) {
  const char* hook = std::getenv("TANDEM_TEST_CHECKPOINT_PAUSE");
  long long at = -1;
  double seconds = 0;
  if (!hook || std::sscanf(hook, "%lld:%lf", &at, &seconds) != 2 || at != step) return 0;
  return seconds;
}

// Writes `bytes` to a new file `path` (never an existing one) and fsyncs it, pausing half-way for
// `pause_s` seconds when a test asks (test_pause_seconds).
void write_new_file(const std::string& path, std::string_view bytes, double pause_s = 0) {
  OwnedFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  TANDEM_USER_CHECK(fd, "checkpoint: cannot create '", path, "': ", errno_text(errno));
  const bool pause = pause_s > 0;
  size_t written = 0;
  bool paused = false;
  while (written < bytes.size()) {
    size_t chunk = std::min<size_t>(bytes.size() - written, 8u << 20);
    if (pause && !paused)
      chunk = std::min(chunk, bytes.size() / 2 - std::min(written, bytes.size() / 2));
    if (pause && !paused && chunk == 0) {
      ::fsync(fd.get());
      log_warn("checkpoint: test hook: pausing ", pause_s, " s half-way through ", path);
      std::this_thread::sleep_for(std::chrono::duration<double>(pause_s));
      paused = true;
      continue;
    }
    const ssize_t n = ::write(fd.get(), bytes.data() + written, chunk);
    if (n < 0 && errno == EINTR) continue;
    TANDEM_USER_CHECK(n > 0, "checkpoint: writing '", path, "' failed after ", written, " of ",
                      bytes.size(), " bytes: ", n < 0 ? errno_text(errno) : "no progress");
    written += static_cast<size_t>(n);
  }
  TANDEM_USER_CHECK(::fsync(fd.get()) == 0, "checkpoint: fsync of '", path,
                    "' failed: ", errno_text(errno));
  TANDEM_USER_CHECK(::close(fd.release()) == 0, "checkpoint: closing '", path,
                    "' failed: ", errno_text(errno));
}

// The key of a saved range in a shard: the parameter's own name when the range is all of it,
// "name[begin:end]" for a ZeRO-1 shard's part; m and v under AdamW's names, as PyTorch's
// optimizer state calls them.
std::string range_key(const std::string& kind, const std::string& name, int64_t begin, int64_t end,
                      int64_t numel) {
  std::string key = kind == kParam ? name : "optimizer." + kind + "." + name;
  if (begin != 0 || end != numel) key += detail::concat("[", begin, ":", end, "]");
  return key;
}

// Elements of a shape, or an Error when they pass 2^62 (a damaged or hostile manifest).
int64_t shape_numel(const Shape& shape, std::string_view what = "checkpoint") {
  int64_t n = 1;
  for (int64_t d : shape) {
    TANDEM_USER_CHECK(d >= 0 && (d == 0 || n <= (int64_t{1} << 62) / d), what, ": shape ",
                      shape_string(shape), " is too large");
    n *= d;
  }
  return n;
}

// The step of a "step-NNNNNNNN" name (eight or more digits), or -1.
int64_t step_of_name(const std::string& name) {
  if (name.size() < 13 || name.compare(0, 5, "step-") != 0) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (int64_t{1} << 50)) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// The last component of a path, trailing separators ignored ("ck/step-00000040/").
std::string last_name(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

// ---- The manifest -------------------------------------------------------------------------

struct SavedRange {
  std::string key, name, kind;
  int64_t begin = 0, end = 0;
  size_t shard = 0;
};

struct ShardRecord {
  std::string file;
  int rank = 0;
  uint64_t bytes = 0;
  std::string xxh64;
};

struct Manifest {
  nlohmann::json json;
  int64_t step = 0;
  std::vector<ShardRecord> shards;
  std::vector<SavedRange> ranges;
  std::map<std::string, Shape> parameters;
  std::map<std::string, std::vector<double>> router_biases;
  std::optional<LearningRateChange> learning_rate_change;  // an operator's SetLearningRate
};

// Reads and checks a checkpoint's manifest; every error names the file.
Manifest read_manifest(const std::string& checkpoint) {
  const std::string path = (fs::path(checkpoint) / kManifestName).string();
  const std::string what = "checkpoint manifest '" + path + "'";
  const std::string text = read_input_file(
      "checkpoint manifest", path,
      "a checkpoint without its manifest is incomplete (its write was interrupted): use an older "
      "one");
  Manifest m;
  try {
    m.json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    TANDEM_USER_FAIL(what, ": not valid JSON (", e.what(), ")");
  }
  auto field = [&](const nlohmann::json& j, const char* name, auto check,
                   const char* expected) -> const nlohmann::json& {
    TANDEM_USER_CHECK(j.is_object() && j.contains(name) && check(j[name]), what, ": field '", name,
                      "' missing or not ", expected);
    return j[name];
  };
  auto is_string = [](const nlohmann::json& j) { return j.is_string(); };
  auto is_count = [](const nlohmann::json& j) {
    return j.is_number_integer() && j.get<int64_t>() >= 0;
  };
  auto is_array = [](const nlohmann::json& j) { return j.is_array(); };
  auto is_object = [](const nlohmann::json& j) { return j.is_object(); };
  TANDEM_USER_CHECK(field(m.json, "format", is_string, "a string") == kFormatName, what,
                    ": format '", m.json["format"].get<std::string>(), "', expected '", kFormatName,
                    "'");
  const int64_t version = field(m.json, "format_version", is_count, "a count").get<int64_t>();
  TANDEM_USER_CHECK(version == kCheckpointFormatVersion, what, ": format version ", version,
                    "; this tandem reads version ", kCheckpointFormatVersion);
  m.step = field(m.json, "step", is_count, "a count").get<int64_t>();
  const int64_t named = step_of_name(last_name(checkpoint));
  TANDEM_USER_CHECK(named < 0 || named == m.step, what, ": records step ", m.step,
                    " but its directory is ", last_name(checkpoint));
  field(m.json, "config", is_object, "an object");
  TANDEM_USER_CHECK(m.json["config"].contains("model") && m.json["config"]["model"].is_object(),
                    what, ": config has no model section");
  for (const auto& [name, shape] : field(m.json, "parameters", is_object, "an object").items()) {
    TANDEM_USER_CHECK(shape.is_array(), what, ": parameter '", name, "' has no shape");
    Shape s;
    for (const auto& d : shape) {
      TANDEM_USER_CHECK(is_count(d), what, ": parameter '", name, "' has a bad shape");
      s.push_back(d.get<int64_t>());
    }
    shape_numel(s, what);
    m.parameters[name] = s;
  }
  for (const auto& [name, values] :
       field(m.json, "router_biases", is_object, "an object").items()) {
    TANDEM_USER_CHECK(values.is_array(), what, ": router bias '", name, "' is not an array");
    std::vector<double>& out = m.router_biases[name];
    for (const auto& v : values) {
      TANDEM_USER_CHECK(v.is_number() && std::isfinite(v.get<double>()), what, ": router bias '",
                        name, "' holds ", v.dump(), ", not a finite number");
      out.push_back(v.get<double>());
    }
  }
  // Older manifests have no change recorded: the run followed its configured schedule.
  if (m.json.contains("lr_schedule") && m.json["lr_schedule"].is_object() &&
      m.json["lr_schedule"].contains("change"))
    m.learning_rate_change = learning_rate_change_from_json(m.json["lr_schedule"]["change"], what);
  for (const auto& shard : field(m.json, "shards", is_array, "an array")) {
    ShardRecord r;
    r.file = field(shard, "file", is_string, "a string").get<std::string>();
    TANDEM_USER_CHECK(r.file.find('/') == std::string::npos && r.file != ".." && r.file != ".",
                      what, ": shard file '", r.file, "' is not a plain file name");
    r.rank = static_cast<int>(field(shard, "rank", is_count, "a count").get<int64_t>());
    r.bytes = field(shard, "bytes", is_count, "a count").get<uint64_t>();
    r.xxh64 = field(shard, "xxh64", is_string, "a string").get<std::string>();
    for (const auto& t : field(shard, "tensors", is_array, "an array")) {
      SavedRange range;
      range.key = field(t, "key", is_string, "a string").get<std::string>();
      range.name = field(t, "name", is_string, "a string").get<std::string>();
      range.kind = field(t, "kind", is_string, "a string").get<std::string>();
      range.begin = field(t, "begin", is_count, "a count").get<int64_t>();
      range.end = field(t, "end", is_count, "a count").get<int64_t>();
      range.shard = m.shards.size();
      TANDEM_USER_CHECK(range.kind == kParam || range.kind == kExpAvg || range.kind == kExpAvgSq,
                        what, ": tensor '", range.key, "' has kind '", range.kind, "'");
      const auto p = m.parameters.find(range.name);
      TANDEM_USER_CHECK(p != m.parameters.end(), what, ": tensor '", range.key,
                        "' is of parameter '", range.name, "', which the manifest does not list");
      TANDEM_USER_CHECK(range.begin < range.end && range.end <= shape_numel(p->second), what,
                        ": tensor '", range.key, "' covers [", range.begin, ", ", range.end,
                        ") of a parameter of ", shape_numel(p->second), " elements");
      m.ranges.push_back(std::move(range));
    }
    m.shards.push_back(std::move(r));
  }
  return m;
}

// Where two model sections differ: "model.d_model = 256 there, 128 here; ...".
std::string model_differences(const nlohmann::json& saved, const nlohmann::json& mine) {
  std::string out;
  for (const auto& [key, value] : mine.items()) {
    const std::string there = saved.contains(key) ? saved[key].dump() : "(absent)";
    if (there != value.dump())
      out += detail::concat(out.empty() ? "" : "; ", "model.", key, " = ", there, " there, ",
                            value.dump(), " here");
  }
  return out;
}

// A shard read whole, its size and checksum checked against the manifest (the size before
// anything is read, so a damaged or huge sparse file costs nothing), its header parsed and its
// metadata matched with the manifest's step and rank.
safetensors::File read_shard(const std::string& checkpoint, const ShardRecord& record,
                             int64_t step) {
  const std::string path = (fs::path(checkpoint) / record.file).string();
  const std::string what = "checkpoint shard '" + path + "'";
  struct stat info {};
  OwnedFd fd = open_input_file("checkpoint shard", path,
                               "the checkpoint is incomplete: use an older one", &info);
  TANDEM_USER_CHECK(static_cast<uint64_t>(info.st_size) == record.bytes, what, ": ",
                    static_cast<uint64_t>(info.st_size), " bytes, the manifest records ",
                    record.bytes, " (truncated or replaced)");
  std::string bytes(record.bytes, '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    TANDEM_USER_CHECK(n > 0, what, ": read failed after ", got,
                      " bytes: ", n < 0 ? errno_text(errno) : "the file shrank");
    got += static_cast<size_t>(n);
  }
  const std::string sum = xxh64_hex(bytes);
  TANDEM_USER_CHECK(sum == record.xxh64, what, ": XXH64 checksum ", sum,
                    " but the manifest records ", record.xxh64, " (the file is damaged)");
  safetensors::File file(std::move(bytes), what);
  const auto& meta = file.header().metadata;
  auto meta_of = [&](const char* key) {
    const auto it = meta.find(key);
    return it == meta.end() ? std::string("(absent)") : it->second;
  };
  TANDEM_USER_CHECK(meta_of("format") == kFormatName && meta_of("step") == std::to_string(step) &&
                        meta_of("rank") == std::to_string(record.rank),
                    what, ": its metadata (format ", meta_of("format"), ", step ", meta_of("step"),
                    ", rank ", meta_of("rank"), ") is not that of rank ", record.rank,
                    "'s shard of step ", step);
  return file;
}

// The entry of a saved range in its shard, checked against the range and the expected dtype
// (any floating dtype a parameter may have, fp32 or fp64, when none is expected).
const safetensors::TensorEntry& entry_of(const safetensors::File& file, const SavedRange& range,
                                         std::optional<DType> dtype = std::nullopt) {
  const safetensors::TensorEntry* e = file.header().find(range.key);
  TANDEM_USER_CHECK(e != nullptr, file.what(), ": has no tensor '", range.key,
                    "', which the manifest lists");
  const bool dtype_ok =
      dtype ? e->dtype == *dtype : (e->dtype == DType::kF32 || e->dtype == DType::kF64);
  TANDEM_USER_CHECK(dtype_ok, file.what(), ": tensor '", range.key, "' is ",
                    safetensors::name_of(e->dtype), ", expected ",
                    dtype ? safetensors::name_of(*dtype) : "F32 or F64");
  TANDEM_USER_CHECK(shape_numel(e->shape) == range.end - range.begin, file.what(), ": tensor '",
                    range.key, "' holds ", shape_numel(e->shape), " elements, the manifest says ",
                    range.end - range.begin);
  return *e;
}

// Every element [0, numel) of each parameter, m and v saved exactly once.
void check_complete(const Manifest& m, const std::string& what) {
  std::map<std::pair<std::string, std::string>, std::vector<std::pair<int64_t, int64_t>>> cover;
  for (const SavedRange& r : m.ranges) cover[{r.kind, r.name}].push_back({r.begin, r.end});
  for (const auto& [name, shape] : m.parameters) {
    for (const char* kind : {kParam, kExpAvg, kExpAvgSq}) {
      auto& ranges = cover[{kind, name}];
      std::sort(ranges.begin(), ranges.end());
      int64_t at = 0;
      for (const auto& [b, e] : ranges) {
        TANDEM_USER_CHECK(b == at, what, ": ", kind, " of '", name, "' ",
                          b < at ? "is saved twice over " : "is missing ", "elements [",
                          std::min(b, at), ", ", std::max(b, at), ")");
        at = e;
      }
      TANDEM_USER_CHECK(at == shape_numel(shape), what, ": ", kind, " of '", name,
                        "' is missing elements [", at, ", ", shape_numel(shape), ")");
    }
  }
}

// The manifest describes the model its config names: as many parameter elements as that model
// has, and one router bias of n_routed_experts values per MoE layer.
void check_model(const Manifest& m, const std::string& what) {
  TANDEM_USER_CHECK(m.json.contains("config_toml") && m.json["config_toml"].is_string(), what,
                    ": the manifest has no config_toml");
  Config config;
  try {
    config = parse_config_string(m.json["config_toml"].get<std::string>(), what + " config");
    validate_config(config);
  } catch (const Error& e) {
    TANDEM_USER_FAIL(what, ": its config is not valid: ", e.what());
  }
  const ModelStats stats = model_stats(config.model);
  int64_t elements = 0;
  for (const auto& [name, shape] : m.parameters) elements += shape_numel(shape, what);
  TANDEM_USER_CHECK(elements == stats.params, what, ": its parameters hold ", elements,
                    " elements, the model of its config has ", stats.params);
  const int64_t moe_layers = config.model.n_layers - config.model.n_dense_layers;
  TANDEM_USER_CHECK(static_cast<int64_t>(m.router_biases.size()) == moe_layers, what, ": ",
                    m.router_biases.size(), " router biases, the model has ", moe_layers,
                    " MoE layers");
  for (const auto& [name, values] : m.router_biases)
    TANDEM_USER_CHECK(static_cast<int64_t>(values.size()) == config.model.n_routed_experts, what,
                      ": router bias '", name, "' has ", values.size(), " values, not ",
                      config.model.n_routed_experts);
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

std::string shard_file_name(int rank) {
  char name[40];
  std::snprintf(name, sizeof name, "rank-%05d.safetensors", rank);
  return name;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const int64_t step = step_of_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory(error)) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

bool is_checkpoint(const std::string& path) {
  std::error_code error;
  return step_of_name(last_name(path)) >= 0 || fs::exists(fs::path(path) / kManifestName, error);
}

namespace {

// Every check of verify_checkpoint, each shard read once and handed to `use` after its checks
// (export reads the parameters from it), so a verified use costs one pass over the shards.
template <class UseShard>
Manifest verify_shards(const std::string& path, UseShard use) {
  const Manifest m = read_manifest(path);
  const std::string what = "checkpoint '" + path + "'";
  check_complete(m, what);
  check_model(m, what);
  for (size_t s = 0; s < m.shards.size(); ++s) {
    const safetensors::File file = read_shard(path, m.shards[s], m.step);
    std::set<std::string> listed;
    for (const SavedRange& r : m.ranges) {
      if (r.shard != s) continue;
      entry_of(file, r);
      listed.insert(r.key);
    }
    TANDEM_USER_CHECK(listed.size() == file.header().entries.size(), file.what(), ": holds ",
                      file.header().entries.size(), " tensors, the manifest lists ", listed.size());
    use(m, s, file);
  }
  return m;
}

}  // namespace

nlohmann::json verify_checkpoint(const std::string& path) {
  return verify_shards(path, [](const Manifest&, size_t, const safetensors::File&) {}).json;
}

// ---- Writing ------------------------------------------------------------------------------

void prepare_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec))
    throw UsageError(detail::concat(
        "checkpoint.dir '", dir, "': cannot be created or is not a directory (",
        ec ? ec.message() : "it is a file", "); give a directory this job can write"));
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw UsageError(detail::concat("checkpoint.dir '", dir, "': not writable (", errno_text(errno),
                                    "); give a directory this job can write"));
}

// What one checkpoint in progress needs, owned jointly by the writer and its background thread:
// the thread never touches the writer, so a writer torn down by an error can leave it behind.
struct CheckpointWriter::Pending {
  int64_t step = 0;
  std::optional<LearningRateChange> learning_rate_change;
  int rank = 0;
  std::string temp_dir, final_dir;
  std::shared_ptr<safetensors::FileImage> image;  // the writer's, reused by every checkpoint
  nlohmann::json description;                     // this rank's part of the manifest
  std::thread thread;
  std::atomic<bool> done{false};
  // Set by the writing thread before `done`:
  std::string error, xxh64;
  uint64_t bytes = 0;
  double write_seconds = 0;
};

namespace {

// The complete checkpoints (a manifest in place) under `dir`, by step.
std::map<int64_t, std::string> complete_checkpoints(const std::string& dir) {
  std::map<int64_t, std::string> out;
  for (const std::string& path : list_checkpoints(dir)) {
    std::error_code ec;
    if (fs::is_regular_file(fs::path(path) / kManifestName, ec))
      out[step_of_name(last_name(path))] = path;
  }
  return out;
}

}  // namespace

CheckpointWriter::CheckpointWriter(const Config& config, comm::Communicator* world,
                                   nlohmann::json grid, std::optional<int64_t> resumed_step)
    : config_(config),
      world_(world),
      grid_(std::move(grid)),
      dir_(config.checkpoint.dir),
      image_(std::make_shared<safetensors::FileImage>()) {
  rank_ = world_ ? world_->rank() : 0;
  // Rank 0 creates the directory, takes its lock (one job per directory: another one's cleanup
  // would remove this one's checkpoints in progress) and decides what the existing checkpoints
  // mean for this run; a marker file of a fresh name then shows whether every rank sees the
  // same directory. Any rank's refusal stops every rank.
  std::string error;
  uint64_t token = 0;
  std::vector<std::string> abandoned;  // complete checkpoints newer than the one resumed
  if (rank_ == 0) {
    try {
      prepare_checkpoint_dir(dir_);
      const std::string lock_path = (fs::path(dir_) / ".tandem-lock").string();
      lock_ = OwnedFd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
      TANDEM_USER_CHECK(lock_, "checkpoint.dir '", dir_,
                        "': cannot create its lock file: ", errno_text(errno));
      if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
        std::string holder = read_input_file("checkpoint lock", lock_path, "");
        while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
          holder.pop_back();
        throw UsageError(detail::concat("checkpoint.dir '", dir_, "' is in use by another job (",
                                        holder.empty() ? "unknown" : holder,
                                        "); give each job a directory of its own"));
      }
      const std::string holder = detail::concat("pid ", ::getpid(), " on ", host_name(), "\n");
      if (::ftruncate(lock_.get(), 0) == 0)
        static_cast<void>(::pwrite(lock_.get(), holder.data(), holder.size(), 0));
      const std::map<int64_t, std::string> existing = complete_checkpoints(dir_);
      if (!resumed_step && !existing.empty())
        throw UsageError(detail::concat(
            "checkpoint.dir '", dir_, "' already holds checkpoints (the newest is ",
            existing.rbegin()->second,
            ") and this run does not resume from them: resume with --resume auto, or give a new "
            "(or empty) checkpoint.dir"));
      if (resumed_step)
        for (const auto& [step, path] : existing)
          if (step > *resumed_step) abandoned.push_back(path);
      std::random_device random;
      token = (uint64_t{random()} << 32 | random()) & 0x7fffffffffffffffull;
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (world_) {
    Tensor t = Tensor::empty({1}, DType::kI64);
    t.data<int64_t>()[0] = static_cast<int64_t>(token);
    world_->broadcast(t, 0).wait();
    token = static_cast<uint64_t>(t.data<int64_t>()[0]);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(token));
  token_ = hex;
  if (world_ && world_->size() > 1) {
    const std::string marker = (fs::path(dir_) / (".tandem-shared-check-" + token_)).string();
    if (rank_ == 0 && error.empty()) {
      try {
        write_new_file(marker, "written by rank 0 on " + host_name() + "\n");
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    world_->barrier().wait();
    if (rank_ != 0) {
      try {
        read_input_file("checkpoint.dir marker", marker, "");
      } catch (const Error&) {
        error = detail::concat("rank ", rank_, " on ", host_name(), " does not see the file ",
                               marker, " that rank 0 wrote: checkpoint.dir '", dir_,
                               "' is not one directory shared by every node; put checkpoints on "
                               "a filesystem every node mounts at the same path");
      }
    }
    const std::vector<std::string> errors = comm::gather_strings(*world_, error, 0);
    const double failed =
        comm::all_reduce_value(*world_, error.empty() ? 0 : 1, comm::ReduceOp::kMax);
    if (rank_ == 0) std::remove(marker.c_str());
    if (failed > 0) {
      std::string all;
      for (const auto& e : errors)
        if (!e.empty()) all += (all.empty() ? "" : "; ") + e;
      throw UsageError(rank_ == 0 ? all : "checkpoint.dir refused: see rank 0's report");
    }
  } else if (!error.empty()) {
    throw UsageError(error);
  }
  if (rank_ != 0) return;
  // A run resumed from an older checkpoint (a rollback) moves the newer ones aside: a later
  // --resume auto must not jump back onto the abandoned branch.
  for (const std::string& path : abandoned) {
    const std::string aside = (fs::path(dir_) / ("abandoned-" + token_)).string();
    std::error_code ec;
    fs::create_directories(aside, ec);
    fs::rename(path, fs::path(aside) / last_name(path), ec);
    log_warn("checkpoint: ", path, " is newer than the checkpoint this run resumed from; moved to ",
             aside, ec ? " failed: " + ec.message() : "");
  }
  // Temporary directories and markers of earlier attempts: what they held never completed.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const bool stale_step =
        name.starts_with(".step-") &&
        (name.find(".tmp-") != std::string::npos || name.find(".replaced-") != std::string::npos);
    if (stale_step || name.starts_with(".tandem-shared-check-")) {
      std::error_code remove_error;
      fs::remove_all(entry.path(), remove_error);
      log_info("checkpoint: removed ", entry.path().string(),
               ", left incomplete by an earlier attempt");
    }
  }
}

CheckpointWriter::~CheckpointWriter() {
  // Torn down by an error (a lost peer): a write still going is left to finish or to die with
  // the process, rather than holding the exit up; it owns everything it uses.
  if (pending_ && pending_->thread.joinable()) {
    if (pending_->done.load(std::memory_order_acquire))
      pending_->thread.join();
    else
      pending_->thread.detach();
  }
}

void CheckpointWriter::save(const TrainingState& state, int64_t step) {
  if (pending_) finish();
  const auto start = std::chrono::steady_clock::now();
  auto p = std::make_shared<Pending>();
  p->step = step;
  p->learning_rate_change = state.learning_rate_change;
  p->rank = rank_;
  p->final_dir = (fs::path(dir_) / checkpoint_name(step)).string();
  p->temp_dir = (fs::path(dir_) / ("." + checkpoint_name(step) + ".tmp-" + token_)).string();

  std::map<std::string, const Parameter*, std::less<>> by_name;
  for (const Parameter* param : state.parameters) by_name[param->name] = param;
  TANDEM_CHECK(state.saves_moments.size() == state.moments.size(), "saves_moments not set");
  TANDEM_CHECK(state.saves_buffer.size() == state.buffers.size(), "saves_buffer not set");
  struct Source {
    const char* data;
    size_t bytes;
  };
  std::vector<safetensors::TensorEntry> entries;
  std::vector<Source> sources;
  // State on a GPU is read through host copies made here, in the step's wait: the copy below
  // runs on kernel threads that must not call CUDA (an error there could not be reported).
  std::vector<Tensor> host_copies;
  const auto host_bytes = [&](const Tensor& t) -> const char* {
    if (t.device().type == DeviceType::kCPU) return static_cast<const char*>(t.raw_data());
    host_copies.push_back(t.to(Device::cpu()));
    return static_cast<const char*>(host_copies.back().raw_data());
  };
  nlohmann::json tensors = nlohmann::json::array();
  for (size_t i = 0; i < state.moments.size(); ++i) {
    if (!state.saves_moments[i]) continue;
    const AdamW::Moments& mo = state.moments[i];
    const auto found = by_name.find(mo.name);
    TANDEM_CHECK(found != by_name.end(), "moments of ", mo.name, " without its parameter");
    const Tensor& value = found->second->value;
    const int64_t numel = value.numel();
    const bool whole = mo.begin == 0 && mo.end == numel;
    const size_t elem = dtype_size(value.dtype());
    const size_t bytes = static_cast<size_t>(mo.end - mo.begin) * elem;
    const Shape shape = whole ? value.shape() : Shape{mo.end - mo.begin};
    const std::pair<const char*, const char*> kinds[] = {
        {kParam, host_bytes(value) + mo.begin * elem},
        {kExpAvg, host_bytes(mo.m)},
        {kExpAvgSq, host_bytes(mo.v)}};
    for (const auto& [kind, data] : kinds) {
      const std::string key = range_key(kind, mo.name, mo.begin, mo.end, numel);
      entries.push_back({key, value.dtype(), shape, 0, 0});
      sources.push_back({data, bytes});
      tensors.push_back(
          {{"key", key}, {"name", mo.name}, {"kind", kind}, {"begin", mo.begin}, {"end", mo.end}});
    }
  }
  p->image = image_;
  image_->lay_out(std::move(entries),
                  std::map<std::string, std::string>{
                      {"format", kFormatName},
                      {"format_version", std::to_string(kCheckpointFormatVersion)},
                      {"step", std::to_string(step)},
                      {"rank", std::to_string(rank_)}});
  // The copy is the whole of what the step waits for: on every kernel thread, in 4 MiB pieces so
  // that a few large tensors still spread over them.
  constexpr size_t kPiece = size_t{4} << 20;
  std::vector<std::pair<size_t, size_t>> pieces;  // (source, offset)
  for (size_t i = 0; i < sources.size(); ++i)
    for (size_t at = 0; at < sources[i].bytes; at += kPiece) pieces.emplace_back(i, at);
#pragma omp parallel for schedule(dynamic)
  for (int64_t k = 0; k < static_cast<int64_t>(pieces.size()); ++k) {
    const auto [i, at] = pieces[k];
    std::memcpy(image_->data(i) + at, sources[i].data + at,
                std::min(kPiece, sources[i].bytes - at));
  }

  nlohmann::json parameters = nlohmann::json::object();
  for (const Parameter* param : state.parameters) parameters[param->name] = param->value.shape();
  nlohmann::json biases = nlohmann::json::object();
  for (size_t i = 0; i < state.buffers.size(); ++i) {
    if (!state.saves_buffer[i]) continue;
    const Tensor b = state.buffers[i].values.to(Device::cpu());
    std::vector<double> values(static_cast<size_t>(b.numel()));
    for (int64_t k = 0; k < b.numel(); ++k)
      values[k] = b.dtype() == DType::kF64 ? b.data<double>()[k] : b.data<float>()[k];
    biases[state.buffers[i].name] = values;
  }
  p->description = {{"file", shard_file_name(rank_)},
                    {"rank", rank_},
                    {"host", host_name()},
                    {"tensors", std::move(tensors)},
                    {"parameters", std::move(parameters)},
                    {"router_biases", std::move(biases)}};
  stats_.copy_seconds += seconds_since(start);
  ++stats_.saved;
  pending_ = std::move(p);
  if (config_.checkpoint.async) {
    pending_->thread = std::thread([pending = pending_] { write_shard(*pending); });
  } else {
    write_shard(*pending_);
    commit();
  }
}

void CheckpointWriter::write_shard(Pending& p) {
  const auto start = std::chrono::steady_clock::now();
  try {
    std::error_code ec;
    fs::create_directory(p.temp_dir, ec);  // every rank tries; the first one makes it
    TANDEM_USER_CHECK(!ec || fs::is_directory(p.temp_dir), "checkpoint: cannot create '",
                      p.temp_dir, "': ", ec.message());
    const std::string_view bytes = p.image->image();
    write_new_file((fs::path(p.temp_dir) / shard_file_name(p.rank)).string(), bytes,
                   test_pause_seconds(p.step));
    fsync_directory(p.temp_dir);
    p.xxh64 = xxh64_hex(bytes);
    p.bytes = bytes.size();
  } catch (const std::exception& e) {
    p.error = e.what();
  }
  p.write_seconds = seconds_since(start);
  p.done.store(true, std::memory_order_release);
}

void CheckpointWriter::poll() {
  if (!pending_) return;
  const auto start = std::chrono::steady_clock::now();
  const double done = pending_->done.load(std::memory_order_acquire) ? 1 : 0;
  const double all_done =
      world_ ? comm::all_reduce_value(*world_, done, comm::ReduceOp::kMin) : done;
  stats_.poll_seconds += seconds_since(start);
  if (all_done > 0) commit();
}

void CheckpointWriter::finish() {
  if (!pending_) return;
  const auto start = std::chrono::steady_clock::now();
  if (pending_->thread.joinable()) pending_->thread.join();
  stats_.wait_seconds += seconds_since(start);
  commit();
}

// Rank 0's half of a commit: the manifest, the rename, the pruning. Returns an error or "".
std::string CheckpointWriter::publish(const Pending& p,
                                      const std::vector<std::string>& shards_text) {
  nlohmann::json shards = nlohmann::json::array();
  nlohmann::json parameters = nlohmann::json::object(), biases = nlohmann::json::object();
  std::string errors;
  for (const std::string& text : shards_text) {
    nlohmann::json d = nlohmann::json::parse(text);
    if (!d["error"].get<std::string>().empty())
      errors += detail::concat(errors.empty() ? "" : "; ", "rank ", d["rank"].get<int>(), " on ",
                               d["host"].get<std::string>(), ": ", d["error"].get<std::string>());
    for (const auto& [name, shape] : d["parameters"].items()) parameters[name] = shape;
    for (const auto& [name, values] : d["router_biases"].items()) biases[name] = values;
    d.erase("parameters");
    d.erase("router_biases");
    d.erase("error");
    shards.push_back(std::move(d));
  }
  if (!errors.empty()) return errors;
  const auto& t = config_.train;
  const nlohmann::json manifest = {
      {"format", kFormatName},
      {"format_version", kCheckpointFormatVersion},
      {"step", p.step},
      {"config", config_to_json(config_)},
      {"config_toml", config_to_string(config_)},
      {"grid", grid_},
      // Sampling is a pure function of (train.seed, batch index, sequence) and initialisation of
      // (train.seed, parameter name): the data position and the seed are the whole RNG state.
      {"data", {{"next_batch", p.step}, {"seed", t.seed}}},
      {"rng", {{"kind", "counter-based"}, {"seed", t.seed}, {"counter", p.step}}},
      {"lr_schedule",
       {{"step", p.step},
        {"next_lr", learning_rate_at(t, p.step, p.learning_rate_change)},
        // An operator's SetLearningRate: a resumed run scales the schedule the same way.
        {"change", learning_rate_change_to_json(p.learning_rate_change)},
        {"warmup_steps", t.warmup_steps},
        {"steps", t.steps},
        {"lr", t.lr},
        {"min_lr", t.min_lr}}},
      {"optimizer_steps", p.step},
      {"parameters", parameters},
      {"router_biases", biases},
      {"shards", shards}};
  try {
    write_new_file((fs::path(p.temp_dir) / kManifestName).string(), manifest.dump(1) + "\n");
    fsync_directory(p.temp_dir);
    std::error_code ec;
    if (fs::exists(p.final_dir, ec)) {
      // From an earlier attempt that got this far, or damaged: replaced whole, never merged.
      const std::string aside =
          (fs::path(dir_) / ("." + checkpoint_name(p.step) + ".replaced-" + token_)).string();
      fs::rename(p.final_dir, aside);
      log_warn("checkpoint: ", p.final_dir, " existed (an earlier attempt's); replacing it");
      fs::rename(p.temp_dir, p.final_dir, ec);
      if (ec) {
        fs::rename(aside, p.final_dir);  // the old one back: something complete stays there
        return detail::concat("renaming ", p.temp_dir, " to ", p.final_dir, ": ", ec.message());
      }
      fs::remove_all(aside, ec);
    } else {
      fs::rename(p.temp_dir, p.final_dir);
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  try {
    fsync_directory(dir_);
  } catch (const std::exception& e) {
    log_warn("checkpoint ", p.final_dir, " is in place but ", e.what(),
             ": it may not survive a crash of this machine");
  }
  // The newest checkpoint.keep complete checkpoints up to this one stay; newer ones cannot exist
  // (moved aside at startup), incomplete directories are not counted and not touched.
  const std::map<int64_t, std::string> complete = complete_checkpoints(dir_);
  int64_t kept = 0;
  for (auto it = complete.rbegin(); it != complete.rend(); ++it) {
    if (it->first > p.step) continue;
    if (++kept <= config_.checkpoint.keep) continue;
    std::error_code ec;
    fs::remove_all(it->second, ec);
  }
  return "";
}

void CheckpointWriter::commit() {
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Pending> p = std::move(pending_);
  if (p->thread.joinable()) p->thread.join();
  stats_.bytes += p->bytes;
  stats_.write_seconds += p->write_seconds;
  p->description["bytes"] = p->bytes;
  p->description["xxh64"] = p->xxh64;
  p->description["error"] = p->error;
  const std::string mine = p->description.dump();
  const std::vector<std::string> all =
      world_ ? comm::gather_strings(*world_, mine, 0) : std::vector<std::string>{mine};
  int64_t committed = -1;
  if (rank_ == 0) {
    const std::string error = publish(*p, all);
    if (error.empty()) {
      committed = p->step;
      log_info("checkpoint ", p->final_dir, " complete (", all.size(), " shard",
               all.size() == 1 ? "" : "s", ")");
    } else {
      log_error("checkpoint ", p->final_dir, " was not written: ", error,
                "; the previous checkpoint stays the newest");
      std::error_code ec;
      fs::remove_all(p->temp_dir, ec);
    }
  }
  // Every rank learns the outcome, so what each says and exits with is true.
  if (world_) {
    Tensor t = Tensor::empty({1}, DType::kI64);
    t.data<int64_t>()[0] = committed;
    world_->broadcast(t, 0).wait();
    committed = t.data<int64_t>()[0];
  }
  if (committed >= 0) {
    ++stats_.committed;
    stats_.last_committed_step = committed;
  } else {
    ++stats_.failed;
  }
  stats_.commit_seconds += seconds_since(start);
  if (on_commit_) on_commit_(p->step, committed >= 0, p->final_dir);
}

// ---- Loading ------------------------------------------------------------------------------

namespace {

// Names what a resumed run changes of the saved run's data stream and schedule.
void warn_train_changes(const std::string& checkpoint, const Config& config) {
  const nlohmann::json saved = read_manifest(checkpoint).json["config"]["train"];
  const nlohmann::json mine = config_to_json(config)["train"];
  const std::pair<const char*, const char*> keys[] = {
      {"seed", "the data order changes"},
      {"batch_size", "the data each step sees changes"},
      {"steps", "the learning-rate schedule changes shape"},
      {"lr", "the learning rate changes"},
      {"warmup_steps", "the learning-rate schedule changes shape"},
      {"min_lr", "the learning-rate schedule changes"}};
  for (const auto& [key, meaning] : keys)
    if (saved.contains(key) && saved[key] != mine[key])
      log_warn("resuming with train.", key, " = ", mine[key].dump(), " (the saved run had ",
               saved[key].dump(), "): ", meaning);
}

// Loads one checkpoint into this rank's state; throws on anything wrong.
void load_one(const std::string& checkpoint, const Config& config, TrainingState& state,
              int64_t* step, std::optional<LearningRateChange>* learning_rate_change) {
  const Manifest m = read_manifest(checkpoint);
  const std::string what = "checkpoint '" + checkpoint + "'";
  check_complete(m, what);
  check_model(m, what);
  const std::string differences =
      model_differences(m.json["config"]["model"], config_to_json(config)["model"]);
  TANDEM_USER_CHECK(differences.empty(), what, " is of another model: ", differences);
  std::map<std::string, Parameter*, std::less<>> params;
  std::map<std::string, int64_t> covered;  // elements loaded per parameter
  for (Parameter* p : state.parameters) {
    const auto saved = m.parameters.find(p->name);
    TANDEM_USER_CHECK(saved != m.parameters.end(), what, " has no parameter '", p->name,
                      "' (another model?)");
    TANDEM_USER_CHECK(saved->second == p->value.shape(), what, ": parameter '", p->name,
                      "' has shape ", shape_string(saved->second), ", this model's is ",
                      shape_string(p->value.shape()));
    params[p->name] = p;
    covered[p->name] = 0;
  }
  std::multimap<std::string, size_t> moments_of;  // name → index in state.moments
  std::vector<int64_t> m_covered(state.moments.size()), v_covered(state.moments.size());
  for (size_t i = 0; i < state.moments.size(); ++i) moments_of.emplace(state.moments[i].name, i);

  std::set<size_t> needed;
  for (const SavedRange& r : m.ranges) {
    if (r.kind == kParam ? params.count(r.name) > 0 : moments_of.count(r.name) > 0)
      needed.insert(r.shard);
  }
  for (size_t s : needed) {
    const safetensors::File file = read_shard(checkpoint, m.shards[s], m.step);
    for (const SavedRange& r : m.ranges) {
      if (r.shard != s) continue;
      if (r.kind == kParam) {
        const auto p = params.find(r.name);
        if (p == params.end()) continue;
        Tensor& value = p->second->value;
        const auto& e = entry_of(file, r, value.dtype());
        const size_t elem = dtype_size(value.dtype());
        copy_bytes(value.device(), static_cast<char*>(value.raw_data()) + r.begin * elem,
                   Device::cpu(), file.data(e), (r.end - r.begin) * elem);
        covered[r.name] += r.end - r.begin;
        continue;
      }
      const auto [first, last] = moments_of.equal_range(r.name);
      for (auto it = first; it != last; ++it) {
        AdamW::Moments& mo = state.moments[it->second];
        const int64_t lo = std::max(mo.begin, r.begin), hi = std::min(mo.end, r.end);
        if (lo >= hi) continue;
        Tensor& target = r.kind == kExpAvg ? mo.m : mo.v;
        const auto& e = entry_of(file, r, target.dtype());
        const size_t elem = dtype_size(target.dtype());
        copy_bytes(target.device(), static_cast<char*>(target.raw_data()) + (lo - mo.begin) * elem,
                   Device::cpu(), file.data(e) + (lo - r.begin) * elem, (hi - lo) * elem);
        (r.kind == kExpAvg ? m_covered : v_covered)[it->second] += hi - lo;
      }
    }
  }
  for (const auto& [name, n] : covered)
    TANDEM_USER_CHECK(n == params[name]->value.numel(), what, ": parameter '", name, "': ", n,
                      " of its ", params[name]->value.numel(), " elements are saved");
  for (size_t i = 0; i < state.moments.size(); ++i) {
    const AdamW::Moments& mo = state.moments[i];
    TANDEM_USER_CHECK(m_covered[i] == mo.end - mo.begin && v_covered[i] == mo.end - mo.begin, what,
                      ": AdamW state of '", mo.name, "' [", mo.begin, ", ", mo.end,
                      "): ", std::min(m_covered[i], v_covered[i]), " elements are saved");
  }
  for (NamedTensor& b : state.buffers) {
    const auto saved = m.router_biases.find(b.name);
    TANDEM_USER_CHECK(saved != m.router_biases.end() &&
                          static_cast<int64_t>(saved->second.size()) == b.values.numel(),
                      what, ": router bias '", b.name, "' is missing or of another size");
    Tensor host = Tensor::empty(b.values.shape(), b.values.dtype());
    for (int64_t k = 0; k < host.numel(); ++k) {
      if (host.dtype() == DType::kF64)
        host.data<double>()[k] = saved->second[k];
      else
        host.data<float>()[k] = static_cast<float>(saved->second[k]);
    }
    b.values.copy_from(host);
  }
  *step = m.step;
  *learning_rate_change = m.learning_rate_change;
}

}  // namespace

std::optional<LoadedCheckpoint> load_checkpoint(const std::string& path,
                                                bool directory_of_checkpoints, const Config& config,
                                                TrainingState& state, comm::Communicator* world) {
  const int rank = world ? world->rank() : 0;
  const bool exact = !directory_of_checkpoints && is_checkpoint(path);
  const std::vector<std::string> candidates =
      exact ? std::vector<std::string>{path} : list_checkpoints(path);
  std::string rejected;
  for (const std::string& candidate : candidates) {
    std::string error;
    int64_t step = 0;
    std::optional<LearningRateChange> learning_rate_change;
    try {
      load_one(candidate, config, state, &step, &learning_rate_change);
    } catch (const std::exception& e) {
      error = e.what();
    }
    // Every rank must take the same checkpoint: one that fails anywhere fails everywhere.
    const bool failed =
        world ? comm::all_reduce_value(*world, error.empty() ? 0 : 1, comm::ReduceOp::kMax) > 0
              : !error.empty();
    if (!failed) {
      if (rank == 0) {
        log_info("resuming from checkpoint ", candidate, " (step ", step, ")",
                 rejected.empty() ? "" : "; newer ones could not be used");
        warn_train_changes(candidate, config);
        if (learning_rate_change)
          log_info("the saved run's learning rate was changed to ",
                   learning_rate_change->learning_rate, " from step ",
                   learning_rate_change->from_step + 1, " on (SetLearningRate); resuming with it");
      }
      return LoadedCheckpoint{candidate, step, learning_rate_change};
    }
    const std::vector<std::string> errors =
        world ? comm::gather_strings(*world, error, 0) : std::vector<std::string>{error};
    std::string why;
    for (size_t r = 0; r < errors.size(); ++r)
      if (!errors[r].empty())
        why += detail::concat(why.empty() ? "" : "; ", errors.size() > 1 ? "rank " : "",
                              errors.size() > 1 ? std::to_string(r) + ": " : "", errors[r]);
    if (rank != 0) why = "see rank 0's report";
    if (exact) throw UsageError(detail::concat("cannot resume from ", candidate, ": ", why));
    if (rank == 0)
      log_warn("checkpoint ", candidate, " cannot be used: ", why, "; trying an older one");
    rejected += detail::concat(rejected.empty() ? "" : "\n  ", candidate, ": ", why);
  }
  if (candidates.empty()) return std::nullopt;
  throw UsageError(detail::concat("no checkpoint in '", path, "' can be used:\n  ", rejected,
                                  "\nmove them aside (or remove them) to start from scratch"));
}

// ---- Export -------------------------------------------------------------------------------

safetensors::FileImage export_parameters(const std::string& checkpoint, DType dtype,
                                         int64_t* elements) {
  TANDEM_USER_CHECK(dtype == DType::kF32 || dtype == DType::kBF16,
                    "export: dtype must be F32 or BF16");
  // The output is laid out from the manifest, before the shards are read.
  const Manifest m = read_manifest(checkpoint);
  std::vector<safetensors::TensorEntry> entries;
  std::map<std::string, size_t> index;
  *elements = 0;
  for (const auto& [name, shape] : m.parameters) {
    index[name] = entries.size();
    entries.push_back({name, dtype, shape, 0, 0});
    *elements += shape_numel(shape);
  }
  safetensors::FileImage image(
      std::move(entries),
      {{"format", "pt"}, {"source", "tandem-checkpoint export"}, {"step", std::to_string(m.step)}});
  verify_shards(checkpoint, [&](const Manifest& verified, size_t s, const safetensors::File& file) {
    for (const SavedRange& r : verified.ranges) {
      if (r.shard != s || r.kind != kParam) continue;
      const safetensors::TensorEntry* e = &entry_of(file, r);
      char* out = image.data(index.at(r.name));
      const char* in = file.data(*e);
      for (int64_t k = 0; k < r.end - r.begin; ++k) {
        const float value = e->dtype == DType::kF64
                                ? static_cast<float>(reinterpret_cast<const double*>(in)[k])
                                : reinterpret_cast<const float*>(in)[k];
        if (dtype == DType::kF32) {
          std::memcpy(out + (r.begin + k) * 4, &value, 4);
        } else {
          const bf16 b = to_bf16(value);
          std::memcpy(out + (r.begin + k) * 2, &b, 2);
        }
      }
    }
  });
  return image;
}

}  // namespace tandem
