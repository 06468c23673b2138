// Loading, overriding, validating and printing the job configuration.
#include "runtime/core/config.h"

#include <arpa/inet.h>
#include <toml++/toml.h>
#include <algorithm>
#include <bit>
#include <charconv>
#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/core/checked_size.h"
#include "runtime/core/choices.h"
#include "runtime/core/errors.h"
#include "runtime/core/input_file.h"

namespace tandem {

namespace {

const ConfigKey* find_key(std::string_view name) {
  for (const auto& key : config_keys())
    if (key.name == name) return &key;
  return nullptr;
}

[[noreturn]] void unknown_key(std::string_view name, std::string_view source) {
  const ConfigKey* nearest = nullptr;
  size_t best = SIZE_MAX;
  for (const auto& key : config_keys()) {
    size_t distance = edit_distance(name, key.name);
    // Also match the key without its section, so "d_model" suggests "model.d_model".
    std::string_view leaf = key.name.substr(key.name.find('.') + 1);
    distance = std::min(distance, edit_distance(name, leaf) + 1);
    if (distance < best) best = distance, nearest = &key;
  }
  std::string hint = nearest && best <= std::max<size_t>(3, name.size() / 3)
                         ? detail::concat("; did you mean '", nearest->name, "'?")
                         : std::string("; see docs/configuration.md for every key");
  throw Error(detail::concat(source, ": unknown configuration key '", name, "'", hint));
}

std::string type_name(const ConfigValueRef& ref) {
  return std::visit(
      [](const auto& bound) -> std::string {
        using T = std::remove_pointer_t<std::decay_t<decltype(bound)>>;
        if constexpr (std::is_same_v<T, int64_t>) return "an integer";
        if constexpr (std::is_same_v<T, double>) return "a number";
        if constexpr (std::is_same_v<T, bool>) return "true or false";
        if constexpr (std::is_same_v<T, std::string>) return "a string";
        if constexpr (std::is_same_v<T, ChoiceRef>) return "one of " + quoted_names(bound.names);
      },
      ref);
}

// Sets a choice from its name, or throws naming the key, the choices and the nearest one.
void set_choice(const ChoiceRef& choice, std::string_view name, std::string_view text) {
  if (!choice.set(text)) throw_unknown_choice(name, text, choice.names);
}

void assign_from_toml(Config& config, const std::string& name, const toml::node& node,
                      std::string_view source) {
  const ConfigKey* key = find_key(name);
  if (!key) unknown_key(name, source);
  ConfigValueRef ref = key->bind(config);
  bool ok = std::visit(
      [&](auto& bound) {
        using T = std::remove_pointer_t<std::decay_t<decltype(bound)>>;
        if constexpr (std::is_same_v<T, ChoiceRef>) {
          auto v = node.value_exact<std::string>();
          if (v) set_choice(bound, name, *v);
          return v.has_value();
        } else if constexpr (std::is_same_v<T, double>) {
          auto* pointer = bound;
          if (auto v = node.value_exact<double>()) return *pointer = *v, true;
          if (auto v = node.value_exact<int64_t>()) return *pointer = static_cast<double>(*v), true;
          return false;
        } else {
          if (auto v = node.value_exact<T>()) return *bound = *v, true;
          return false;
        }
      },
      ref);
  if (!ok) {
    std::ostringstream shown;
    node.visit([&](auto&& value) {
      if constexpr (toml::is_table<decltype(value)> || toml::is_array<decltype(value)>)
        shown << "a " << node.type();
      else
        shown << node.type() << " " << value;
    });
    throw Error(detail::concat(source, ": key '", name, "' must be ", type_name(ref), ", got ",
                               shown.str()));
  }
}

void walk_table(Config& config, const toml::table& table, const std::string& prefix,
                std::string_view source) {
  for (const auto& [key, node] : table) {
    std::string name =
        prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str());
    if (const auto* sub = node.as_table())
      walk_table(config, *sub, name, source);
    else
      assign_from_toml(config, name, node, source);
  }
}

std::string value_string(const ConfigValueRef& ref) {
  return std::visit(
      [](const auto& bound) -> std::string {
        using T = std::remove_pointer_t<std::decay_t<decltype(bound)>>;
        if constexpr (std::is_same_v<T, ChoiceRef>) return detail::concat("\"", bound.name(), "\"");
        if constexpr (std::is_same_v<T, std::string>) return "\"" + *bound + "\"";
        if constexpr (std::is_same_v<T, bool>) return *bound ? "true" : "false";
        if constexpr (std::is_same_v<T, int64_t>) return std::to_string(*bound);
        if constexpr (std::is_same_v<T, double>) {
          std::ostringstream out;
          out << *bound;
          return out.str();
        }
      },
      ref);
}

// One end of a range: "2^24" for a power of two from 2^16 on (with its digits when `exact`), an
// integer without an exponent, else as a stream prints it.
std::string bound_string(double value, bool exact) {
  if (value == std::floor(value) && std::abs(value) < 1e15) {
    const auto integer = static_cast<int64_t>(value);
    if (integer >= 65536 && std::has_single_bit(static_cast<uint64_t>(integer))) {
      std::string power = detail::concat("2^", std::countr_zero(static_cast<uint64_t>(integer)));
      return exact ? detail::concat(power, " = ", integer) : power;
    }
    return std::to_string(integer);
  }
  std::ostringstream out;
  out << value;
  return out.str();
}

[[noreturn]] void out_of_range(std::string_view key, const std::string& value,
                               const ValueRange& range) {
  const bool bounded = std::isfinite(range.low) && std::isfinite(range.high);
  throw Error(detail::concat(key, " = ", value, ": must be ", bounded ? "in " : "",
                             range_string(range, true), "; set ", key,
                             " to a value in that range (docs/configuration.md)"));
}

// Every numeric key inside its range. NaN fails every comparison, so it is refused too.
void check_ranges(const Config& config) {
  Config copy = config;  // bind() needs a mutable Config
  for (const auto& key : config_keys()) {
    if (!key.range) continue;
    const ConfigValueRef ref = key.bind(copy);
    std::visit(
        [&](const auto& bound) {
          using T = std::remove_pointer_t<std::decay_t<decltype(bound)>>;
          if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>) {
            if (!key.range->contains(static_cast<double>(*bound)))
              out_of_range(key.name, value_string(ref), *key.range);
          } else {
            TANDEM_FAIL("configuration key ", key.name, " has a range but is not a number");
          }
        },
        ref);
  }
}

// Every tensor a step of the whole model allocates (a rank of a parallel run holds a part of it)
// must be addressable, and no size computed on the way may overflow.
void check_sizes(const ModelConfig& m, const TrainConfig& t) {
  const NamedSize batch{"train.batch_size", t.batch_size}, seq{"model.seq_len", m.seq_len},
      d{"model.d_model", m.d_model}, vocab{"model.vocab_size", m.vocab_size},
      heads{"model.n_heads", m.n_heads}, d_ff{"model.d_ff", m.d_ff},
      d_expert{"model.d_expert", m.d_expert}, experts{"model.n_routed_experts", m.n_routed_experts},
      shared{"model.n_shared_experts", m.n_shared_experts}, top_k{"model.top_k", m.top_k},
      two{"2", 2}, three{"3", 3};
  size_product("the embedding and the output head", {vocab, d});
  size_product("the fused q, k, v weight", {three, d, d});
  size_product("the tokens of a step", {batch, seq});
  size_product("the logits of a step", {batch, seq, vocab});
  size_product("q, k and v of a step", {batch, seq, three, d});
  size_product("the attention probabilities of a step", {batch, heads, seq, seq});
  if (m.n_dense_layers > 0) {
    size_product("a dense layer's fused gate and up weight", {two, d_ff, d});
    size_product("a dense layer's gate and up activations of a step", {batch, seq, two, d_ff});
  }
  if (m.n_dense_layers < m.n_layers) {
    size_product("the routed experts of a MoE layer", {experts, three, d_expert, d});
    size_product("the shared experts of a MoE layer", {shared, three, d_expert, d});
    size_product("the router scores of a step", {batch, seq, experts});
    size_product("the routed rows of a step", {batch, seq, top_k, d});
    size_product("the routed experts' gate and up activations of a step",
                 {batch, seq, top_k, two, d_expert});
    size_product("the shared experts' gate and up activations of a step",
                 {batch, seq, shared, two, d_expert});
  }
}

}  // namespace

std::string range_string(const ValueRange& range, bool exact) {
  const bool low = std::isfinite(range.low), high = std::isfinite(range.high);
  if (low && !high)
    return detail::concat(range.low_open ? "> " : ">= ", bound_string(range.low, exact));
  if (!low && high)
    return detail::concat(range.high_open ? "< " : "<= ", bound_string(range.high, exact));
  if (!low && !high) return "any";
  return detail::concat(range.low_open ? "(" : "[", bound_string(range.low, exact), ", ",
                        bound_string(range.high, exact), range.high_open ? ")" : "]");
}

Config parse_config_string(std::string_view toml_text, std::string_view source_name) {
  Config config;
  toml::table table;
  try {
    table = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& error) {
    const auto& where = error.source().begin;
    throw Error(detail::concat(source_name, ":", where.line, ":", where.column,
                               ": TOML syntax error: ", error.description()));
  }
  walk_table(config, table, "", source_name);
  return config;
}

Config load_config_file(const std::string& path) {
  return parse_config_string(
      read_input_file("config file", path, "give a TOML file (examples/configs/ has working ones)"),
      path);
}

void apply_override(Config& config, std::string_view assignment) {
  size_t equals = assignment.find('=');
  TANDEM_USER_CHECK(equals != std::string_view::npos && equals > 0,
                    "--set expects section.key=value, got '", assignment, "'");
  std::string name(assignment.substr(0, equals));
  std::string text(assignment.substr(equals + 1));
  const ConfigKey* key = find_key(name);
  if (!key) unknown_key(name, "--set");
  ConfigValueRef ref = key->bind(config);
  // Accept both value and "value" for strings, as a shell user would type either.
  auto unquoted = [&] {
    return text.size() >= 2 && text.front() == '"' && text.back() == '"'
               ? text.substr(1, text.size() - 2)
               : text;
  };
  bool ok = std::visit(
      [&](auto& bound) {
        using T = std::remove_pointer_t<std::decay_t<decltype(bound)>>;
        if constexpr (std::is_same_v<T, ChoiceRef>) {
          set_choice(bound, name, unquoted());
          return true;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return *bound = unquoted(), true;
        } else if constexpr (std::is_same_v<T, bool>) {
          if (text == "true") return *bound = true, true;
          if (text == "false") return *bound = false, true;
          return false;
        } else {
          T value{};
          auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
          if (error != std::errc() || end != text.data() + text.size()) return false;
          return *bound = value, true;
        }
      },
      ref);
  TANDEM_USER_CHECK(ok, "--set ", name, ": value '", text, "' is not ", type_name(ref));
}

void validate_config(const Config& c) {
  const auto& m = c.model;
  const auto& t = c.train;
  check_ranges(c);
  TANDEM_USER_CHECK(m.d_model % m.n_heads == 0, "config: model.n_heads = ", m.n_heads,
                    " does not divide model.d_model = ", m.d_model);
  TANDEM_USER_CHECK((m.d_model / m.n_heads) % 2 == 0,
                    "config: head size d_model/n_heads = ", m.d_model / m.n_heads,
                    " must be even for rotary embeddings");
  TANDEM_USER_CHECK(m.n_dense_layers <= m.n_layers,
                    "config: model.n_dense_layers = ", m.n_dense_layers,
                    " must be between 0 and model.n_layers = ", m.n_layers);
  if (m.n_dense_layers < m.n_layers) {
    TANDEM_USER_CHECK(m.n_routed_experts > 0, "config: MoE layers need model.n_routed_experts > 0",
                      ", got ", m.n_routed_experts, " (or set n_dense_layers = n_layers)");
    TANDEM_USER_CHECK(m.top_k >= 1 && m.top_k <= m.n_routed_experts,
                      "config: model.top_k = ", m.top_k,
                      " must be between 1 and model.n_routed_experts = ", m.n_routed_experts);
    TANDEM_USER_CHECK(m.n_expert_groups >= 1 && m.n_routed_experts % m.n_expert_groups == 0,
                      "config: model.n_expert_groups = ", m.n_expert_groups,
                      " must divide model.n_routed_experts = ", m.n_routed_experts);
    TANDEM_USER_CHECK(
        m.max_groups_per_token >= 0 && m.max_groups_per_token <= m.n_expert_groups,
        "config: model.max_groups_per_token = ", m.max_groups_per_token,
        " must be between 0 (no limit) and model.n_expert_groups = ", m.n_expert_groups);
    TANDEM_USER_CHECK(
        m.max_groups_per_token == 0 ||
            m.top_k <= m.max_groups_per_token * (m.n_routed_experts / m.n_expert_groups),
        "config: model.top_k = ", m.top_k, " experts do not fit in ", m.max_groups_per_token,
        " groups of ", m.n_routed_experts / m.n_expert_groups,
        " experts (model.max_groups_per_token)");
  }
  TANDEM_USER_CHECK(t.min_lr <= t.lr, "train.min_lr = ", t.min_lr, ": more than train.lr = ", t.lr,
                    "; the cosine decays from train.lr down to train.min_lr, set it at most lr");
  TANDEM_USER_CHECK(!(c.fp8.enabled || c.fp8.attention) || m.dtype == DType::kF32,
                    "config: FP8 needs model.dtype = \"fp32\" (master weights), got \"",
                    choice_name(m.dtype), "\"");
  TANDEM_USER_CHECK(!c.fp8.attention || c.fp8.enabled,
                    "config: fp8.attention = true needs fp8.enabled = true");
  // The CUDA kernels take fp32 (the fp64 reference exists for gradient checks on the CPU), and
  // the router keeps its top-k and group choices in registers.
  if (t.device == DeviceType::kCUDA) {
    TANDEM_USER_CHECK(m.dtype == DType::kF32,
                      "config: train.device = \"cuda\" needs "
                      "model.dtype = \"fp32\", got \"",
                      choice_name(m.dtype), "\" (fp64 is the CPU reference's)");
    TANDEM_USER_CHECK(m.top_k <= 32 && (m.max_groups_per_token == 0 || m.n_expert_groups <= 64),
                      "config: train.device = \"cuda\" routes at most model.top_k = 32 experts "
                      "over at most model.n_expert_groups = 64 groups; got top_k ",
                      m.top_k, " and ", m.n_expert_groups, " groups");
  }
  // The world group is opened before any device exists, so it is never NCCL.
  TANDEM_USER_CHECK(c.checkpoint.interval == 0 || !c.checkpoint.dir.empty(),
                    "config: checkpoint.interval = ", c.checkpoint.interval,
                    " needs checkpoint.dir (where to write them); set both, or neither");
  TANDEM_USER_CHECK(c.control.port == 0 || !c.control.bind.empty(),
                    "config: control.port = ", c.control.port,
                    " needs control.bind (the address to listen on, e.g. \"127.0.0.1\")");
  TANDEM_USER_CHECK(c.comm.world != CommBackend::kNccl,
                    "config: comm.world = \"nccl\" is not possible (the world group bootstraps "
                    "the others on the CPU); use \"auto\", \"mpi\" or \"ucx\", and comm.expert "
                    "or comm.data = \"nccl\" for GPU traffic");
  const MonitoringConfig& mon = c.monitoring;
  in_addr bind_address{};
  TANDEM_USER_CHECK(::inet_pton(AF_INET, mon.bind.c_str(), &bind_address) == 1,
                    "config: monitoring.bind = \"", mon.bind,
                    "\" is not an IPv4 address; use \"127.0.0.1\" (this machine only) or "
                    "\"0.0.0.0\" (every interface)");
  TANDEM_USER_CHECK(mon.sd_file.empty() || mon.metrics_port > 0, "config: monitoring.sd_file = \"",
                    mon.sd_file,
                    "\" lists the metrics endpoints, which need monitoring.metrics_port; set "
                    "it, or leave monitoring.sd_file empty");
  TANDEM_USER_CHECK(!mon.job.empty(),
                    "config: monitoring.job is empty; give the job a name for its targets' job "
                    "label (default \"tandem\")");
  if (c.data.format == DataFormat::kText) {
    TANDEM_USER_CHECK(m.vocab_size >= 256,
                      "config: data.format = \"text\" is byte-level and needs ",
                      "model.vocab_size >= 256, got ", m.vocab_size);
  } else {
    TANDEM_USER_CHECK(!c.data.val_path.empty(),
                      "config: data.format = \"uint16\" needs data.val_path (the held-out tokens)");
  }
  check_sizes(m, t);
}

namespace {

// A seconds key of the comm section in milliseconds, for the communicators' int deadlines; its
// own range is checked here, so that no caller can overflow the int, validated config or not.
int seconds_key_ms(const char* name, double CommConfig::*member, const CommConfig& comm) {
  const ValueRange* range = nullptr;
  for (const auto& key : config_keys())
    if (key.name == name && key.range) range = &*key.range;
  TANDEM_CHECK(range, name, " is not a configuration key with a range");
  if (!range->contains(comm.*member)) {
    CommConfig copy = comm;
    out_of_range(name, value_string(&(copy.*member)), *range);
  }
  const double ms = std::round(comm.*member * 1000);
  TANDEM_CHECK(ms <= INT_MAX, name, "'s range must keep its milliseconds in an int");
  return static_cast<int>(ms);
}

}  // namespace

int comm_timeout_ms(const CommConfig& comm) {
  return seconds_key_ms("comm.timeout_s", &CommConfig::timeout_s, comm);
}

int rendezvous_timeout_ms(const CommConfig& comm) {
  return seconds_key_ms("comm.rendezvous_timeout_s", &CommConfig::rendezvous_timeout_s, comm);
}

std::string config_to_string(const Config& config) {
  Config copy = config;  // bind() needs a mutable Config; printing must not change the original
  std::string out;
  for (const auto& key : config_keys())
    out += detail::concat(key.name, " = ", value_string(key.bind(copy)), "\n");
  return out;
}

nlohmann::json config_to_json(const Config& config) {
  Config copy = config;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& key : config_keys()) {
    std::string name(key.name);
    size_t dot = name.find('.');
    auto& slot = out[name.substr(0, dot)][name.substr(dot + 1)];
    std::visit(
        [&](const auto& bound) {
          using T = std::decay_t<decltype(bound)>;
          if constexpr (std::is_same_v<T, ChoiceRef>)
            slot = std::string(bound.name());
          else
            slot = *bound;
        },
        key.bind(copy));
  }
  return out;
}

std::string config_reference_markdown() {
  Config defaults;
  std::string out =
      "# Configuration reference\n\n"
      "Generated by `tandem-train --config-reference` from runtime/core/config_keys.cc; a test "
      "keeps this file equal to that output.\n\n"
      "Every key may be set in the TOML file (as `[section]` then `key = value`) or on the "
      "command line with `--set section.key=value`. Unknown keys are refused, and so is a number "
      "outside its key's accepted range (floats must also be finite). Sizes are checked as "
      "products "
      "too: every tensor of a step (the logits are train.batch_size * model.seq_len * "
      "model.vocab_size elements) and the whole model's parameters must stay within 2^44 "
      "elements, the 128 TiB a process can address at 8 bytes each.\n\n"
      "| key | default | accepted | meaning |\n|---|---|---|---|\n";
  for (const auto& key : config_keys())
    out += detail::concat("| `", key.name, "` | `", value_string(key.bind(defaults)), "` | ",
                          key.range ? detail::concat("`", range_string(*key.range), "`") : "",
                          " | ", key.doc, " |\n");
  return out;
}

}  // namespace tandem
