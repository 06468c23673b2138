// Loading, overriding, validating and printing the job configuration.
#include "runtime/core/config.h"

#include <toml++/toml.h>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/core/choices.h"
#include "runtime/core/errors.h"

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
        if constexpr (std::is_same_v<T, ChoiceRef>) {
          std::string names;
          for (std::string_view name : bound.names)
            names += detail::concat(names.empty() ? "" : ", ", "\"", name, "\"");
          return "one of " + names;
        }
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

}  // namespace

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
  std::error_code error;
  TANDEM_USER_CHECK(std::filesystem::is_regular_file(path, error), "cannot read config file '",
                    path, "': not a regular file (examples/configs/ has working ones)");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  TANDEM_USER_CHECK(in.good() || in.eof(), "cannot read config file '", path, "'");
  return parse_config_string(text.str(), path);
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
  auto positive = [](int64_t value, std::string_view name) {
    TANDEM_USER_CHECK(value > 0, "config: ", name, " must be positive, got ", value);
  };
  positive(m.vocab_size, "model.vocab_size");
  positive(m.seq_len, "model.seq_len");
  positive(m.d_model, "model.d_model");
  positive(m.n_layers, "model.n_layers");
  positive(m.n_heads, "model.n_heads");
  positive(m.d_ff, "model.d_ff");
  positive(m.d_expert, "model.d_expert");
  positive(t.steps, "train.steps");
  positive(t.batch_size, "train.batch_size");
  positive(t.eval_batches, "train.eval_batches");
  TANDEM_USER_CHECK(m.d_model % m.n_heads == 0, "config: model.n_heads = ", m.n_heads,
                    " does not divide model.d_model = ", m.d_model);
  TANDEM_USER_CHECK((m.d_model / m.n_heads) % 2 == 0,
                    "config: head size d_model/n_heads = ", m.d_model / m.n_heads,
                    " must be even for rotary embeddings");
  TANDEM_USER_CHECK(m.n_dense_layers >= 0 && m.n_dense_layers <= m.n_layers,
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
    TANDEM_USER_CHECK(m.n_shared_experts >= 0,
                      "config: model.n_shared_experts = ", m.n_shared_experts,
                      " must not be negative");
  }
  TANDEM_USER_CHECK(m.norm_eps > 0 && m.init_std > 0 && m.rope_theta > 1,
                    "config: model.norm_eps and model.init_std must be > 0, model.rope_theta > 1");
  TANDEM_USER_CHECK(t.threads >= 0, "config: train.threads = ", t.threads,
                    " must be >= 0 (0 picks cores / local ranks)");
  TANDEM_USER_CHECK(t.eval_interval >= 0, "config: train.eval_interval must be >= 0");
  const auto& p = c.parallel;
  positive(p.pp, "parallel.pp");
  positive(p.ep, "parallel.ep");
  positive(p.microbatches, "parallel.microbatches");
  TANDEM_USER_CHECK(t.warmup_steps >= 0, "config: train.warmup_steps must be >= 0");
  TANDEM_USER_CHECK(t.lr > 0 && t.min_lr >= 0 && t.min_lr <= t.lr, "config: need train.lr > 0 and ",
                    "0 <= train.min_lr <= train.lr, got lr = ", t.lr, ", min_lr = ", t.min_lr);
  TANDEM_USER_CHECK(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1,
                    "config: train.beta1 and train.beta2 must be in [0, 1)");
  TANDEM_USER_CHECK(t.weight_decay >= 0 && t.grad_clip >= 0 && t.adam_eps > 0,
                    "config: train.weight_decay and train.grad_clip must be >= 0, adam_eps > 0");
  TANDEM_USER_CHECK(!(c.fp8.enabled || c.fp8.attention) || m.dtype == DType::kF32,
                    "config: FP8 needs model.dtype = \"fp32\" (master weights), got \"",
                    choice_name(m.dtype), "\"");
  TANDEM_USER_CHECK(!c.fp8.attention || c.fp8.enabled,
                    "config: fp8.attention = true needs fp8.enabled = true");
  // The world group is opened before any device exists, so it is never NCCL.
  TANDEM_USER_CHECK(c.comm.world != CommBackend::kNccl,
                    "config: comm.world = \"nccl\" is not possible (the world group bootstraps "
                    "the others on the CPU); use \"auto\", \"mpi\" or \"ucx\", and comm.expert "
                    "or comm.data = \"nccl\" for GPU traffic");
  // Milliseconds of it must fit the int the communicators count in.
  TANDEM_USER_CHECK(c.comm.timeout_s >= 0.01 && c.comm.timeout_s <= 86400,
                    "config: comm.timeout_s must be between 0.01 and 86400 seconds (a day), got ",
                    c.comm.timeout_s);
  TANDEM_USER_CHECK(c.comm.ranks_per_node >= 0, "config: comm.ranks_per_node must be >= 0");
  if (c.data.format == DataFormat::kText) {
    TANDEM_USER_CHECK(m.vocab_size >= 256,
                      "config: data.format = \"text\" is byte-level and needs ",
                      "model.vocab_size >= 256, got ", m.vocab_size);
    TANDEM_USER_CHECK(c.data.val_fraction > 0 && c.data.val_fraction < 1,
                      "config: data.val_fraction must be in (0, 1), got ", c.data.val_fraction);
  } else {
    TANDEM_USER_CHECK(!c.data.val_path.empty(),
                      "config: data.format = \"uint16\" needs data.val_path (the held-out tokens)");
  }
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
      "command line with `--set section.key=value`. Unknown keys are refused.\n\n"
      "| key | default | meaning |\n|---|---|---|\n";
  for (const auto& key : config_keys())
    out += detail::concat("| `", key.name, "` | `", value_string(key.bind(defaults)), "` | ",
                          key.doc, " |\n");
  return out;
}

}  // namespace tandem
