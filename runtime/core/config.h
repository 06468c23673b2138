// The job configuration: typed structs filled from a TOML file and `--set section.key=value`
// overrides. Every key, its type, default and meaning is listed once, in config_keys.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/core/choices.h"

namespace tandem {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t seq_len = 128;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_dense_layers = 1;
  int64_t n_heads = 4;
  int64_t d_ff = 512;
  int64_t n_routed_experts = 8;
  int64_t n_shared_experts = 1;
  int64_t top_k = 2;
  int64_t d_expert = 128;
  int64_t n_expert_groups = 1;       // routed experts in this many equal contiguous groups
  int64_t max_groups_per_token = 0;  // node-limited routing: groups a token may use (0: all)
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  double init_std = 0.02;
  double router_bias_update_rate = 1e-3;
  DType dtype = DType::kF32;
};

struct TrainConfig {
  int64_t steps = 200;
  int64_t batch_size = 16;
  int64_t seed = 1234;
  int64_t eval_interval = 50;
  int64_t eval_batches = 8;
  int64_t log_interval = 0;  // steps between printed step lines; 0: about 100 lines a run
  DeviceType device = DeviceType::kCPU;
  int64_t threads = 0;
  int64_t warmup_steps = 20;
  double lr = 3e-3;
  double min_lr = 3e-4;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;
};

struct DataConfig {
  DataFormat format = DataFormat::kText;
  std::string path = "data/kjv.txt";
  std::string val_path;
  double val_fraction = 0.05;
};

struct Fp8Config {
  bool enabled = false;
  bool attention = false;
  bool power_of_two_scales = false;
  Fp8Format format = Fp8Format::kE4M3;
};

struct CommConfig {
  CommBackend world = CommBackend::kAuto;     // of the world group: auto, mpi, ucx
  CommBackend pipeline = CommBackend::kAuto;  // per traffic class
  CommBackend expert = CommBackend::kAuto;
  CommBackend data = CommBackend::kAuto;
  ExpertDispatchMode dispatch = ExpertDispatchMode::kFlat;
  ExpertExchange expert_exchange = ExpertExchange::kAuto;
  double timeout_s = 300;
  double rendezvous_timeout_s = 600;  // how long a rank waits to join; above timeout_s
  std::string flight_record_dir;  // "": the launcher's log directory, else the working directory
  bool node_collectives = true;   // UCX: large collectives of a one-node group in shared memory
  int64_t ranks_per_node = 0;     // 0: from hostnames; > 0 simulates nodes of that many ranks
};

struct ParallelConfig {
  int64_t pp = 1;  // pipeline ranks; dp = world / pp
  int64_t ep = 1;  // expert-parallel group size inside each stage; divides dp
  ScheduleKind schedule = ScheduleKind::k1F1B;
  int64_t microbatches = 1;  // per data-parallel rank and step, over both directions
  bool zero1 = false;
  bool overlap = true;  // run F&B pairs interleaved at sub-layer granularity
};

struct CheckpointConfig {
  std::string dir;       // "": no checkpoints
  int64_t interval = 0;  // steps between checkpoints (0: only the last step's and on SIGTERM)
  int64_t keep = 3;      // complete checkpoints kept (the newest)
  bool async = true;     // written by a background thread after a copy to host buffers
};

// The gRPC control plane (monitoring/proto/control.proto), served by rank 0.
struct ControlConfig {
  int64_t port = 0;                // 0: off
  std::string bind = "127.0.0.1";  // the address it listens on
  std::string token_file;          // "": TANDEM_CONTROL_TOKEN, else a generated one
};

// Prometheus metrics (monitoring/metrics.h, docs/metrics.md).
struct MonitoringConfig {
  int64_t metrics_port = 0;        // 0: no metrics; each rank serves on metrics_port + LOCAL_RANK
  std::string bind = "127.0.0.1";  // IPv4 address the metrics endpoints listen on
  std::string sd_file;             // "": no targets file; else rank 0 writes one there
  std::string job = "tandem";      // the targets' job label
  double straggler_ratio = 1.2;    // compute over the other ranks' median that names a rank
  int64_t straggler_window = 20;   // steps whose median ratio decides
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  Fp8Config fp8;
  CommConfig comm;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  ControlConfig control;
  MonitoringConfig monitoring;
};

// A key whose value is one of a set of names (an enum field, see choices.h).
struct ChoiceRef {
  std::function<std::string_view()> name;     // of the current value
  std::function<bool(std::string_view)> set;  // false (nothing changed) for an unknown name
  std::vector<std::string_view> names;        // every valid one
};
using ConfigValueRef = std::variant<int64_t*, double*, bool*, std::string*, ChoiceRef>;

// What a key's binder returns for a field: the field itself, or for an enum its ChoiceRef.
template <class T>
ConfigValueRef config_value_ref(T* field) {
  if constexpr (std::is_enum_v<T>) {
    return ChoiceRef{[field] { return choice_name(*field); },
                     [field](std::string_view text) {
                       std::optional<T> value = find_choice<T>(text);
                       if (value) *field = *value;
                       return value.has_value();
                     },
                     choice_names<T>()};
  } else {
    return field;
  }
}

// The values a numeric key accepts, from `low` to `high`, each end included unless it is open;
// validate_config refuses any other (and every NaN), the reference prints it with the key.
struct ValueRange {
  double low = -std::numeric_limits<double>::infinity();
  double high = std::numeric_limits<double>::infinity();
  bool low_open = false;
  bool high_open = false;
  static ValueRange closed(double low, double high) { return {low, high, false, false}; }
  static ValueRange left_open(double low, double high) { return {low, high, true, false}; }
  static ValueRange right_open(double low, double high) { return {low, high, false, true}; }
  static ValueRange open(double low, double high) { return {low, high, true, true}; }
  static ValueRange at_least(double low) {
    return {low, std::numeric_limits<double>::infinity(), false, false};
  }
  bool contains(double value) const {
    return (low_open ? value > low : value >= low) && (high_open ? value < high : value <= high);
  }
};
// "(0, 1]", "[1, 2^24]", ">= 0"; `exact` adds the decimal value of each power of two written 2^k.
std::string range_string(const ValueRange& range, bool exact = false);

struct ConfigKey {
  std::string_view name;  // "section.key"
  std::string_view doc;
  std::function<ConfigValueRef(Config&)> bind;
  std::optional<ValueRange> range;  // numeric keys: every value they accept (floats: finite)
};

// Every key tandem understands, in documentation order.
const std::vector<ConfigKey>& config_keys();

// Parses a TOML file; rejects unknown keys (suggesting the nearest known one) and wrong types.
Config load_config_file(const std::string& path);
Config parse_config_string(std::string_view toml_text, std::string_view source_name);
// Applies one "section.key=value" override; the value is parsed according to the key's type.
void apply_override(Config& config, std::string_view assignment);
// Refuses values outside a key's range, impossible combinations, and sizes whose products would
// overflow or pass what one process can address (kMaxElements), with a message naming the numbers.
void validate_config(const Config& config);
// comm.timeout_s in milliseconds, for the communicators' int deadlines. Refuses a value outside the
// key's range itself, so that no caller can overflow the int, validated config or not.
int comm_timeout_ms(const CommConfig& comm);
// comm.rendezvous_timeout_s in milliseconds, checked the same way.
int rendezvous_timeout_ms(const CommConfig& comm);

// "section.key = value" lines in documentation order, and the same as nested JSON.
std::string config_to_string(const Config& config);
nlohmann::json config_to_json(const Config& config);
// The reference of all keys as Markdown (docs/configuration.md is this output).
std::string config_reference_markdown();

}  // namespace tandem
