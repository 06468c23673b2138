// Configuration: parsing, unknown-key suggestions, type errors, overrides, validation, and the
// generated reference in docs/ staying equal to the key table.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/core/config.h"
#include "tests/unit/error_text.h"

namespace tandem {
namespace {

using testing::error_of;

TEST(Config, ParsesSectionsAndKeepsDefaults) {
  Config c = parse_config_string("[model]\nd_model = 64\n[train]\nlr = 1\nsteps = 7\n", "t.toml");
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.train.lr, 1.0);  // an integer is accepted where a number is expected
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.model.n_heads, ModelConfig{}.n_heads);
}

TEST(Config, UnknownKeySuggestsTheNearest) {
  EXPECT_NE(error_of([] {
              parse_config_string("[model]\nd_modle = 3\n", "t.toml");
            }).find("unknown configuration key 'model.d_modle'; did you mean 'model.d_model'?"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_config_string("[train]\nsteps = 1\n[trian]\nseed = 1\n", "x");
            }).find("did you mean 'train.seed'?"),
            std::string::npos);
  Config c;
  EXPECT_NE(error_of([&] { apply_override(c, "model.topk=3"); }).find("did you mean 'model.top_k'"),
            std::string::npos);
}

TEST(Config, WrongTypesAreNamed) {
  const std::string e = error_of([] { parse_config_string("[model]\nd_model = \"big\"\n", "t"); });
  EXPECT_NE(e.find("key 'model.d_model' must be an integer, got string"), std::string::npos) << e;
  Config c;
  EXPECT_NE(error_of([&] { apply_override(c, "train.steps=1.5"); }).find("is not an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { apply_override(c, "train.steps"); }).find("section.key=value"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config_string("[model\n", "bad.toml"); }).find("bad.toml:1"),
            std::string::npos);
}

TEST(Config, OverridesParseByType) {
  Config c;
  apply_override(c, "train.lr=0.5");
  apply_override(c, "data.path=\"x.txt\"");
  apply_override(c, "model.n_layers=6");
  EXPECT_EQ(c.train.lr, 0.5);
  EXPECT_EQ(c.data.path, "x.txt");
  EXPECT_EQ(c.model.n_layers, 6);
}

TEST(Config, ValidationNamesTheNumbers) {
  Config c;
  c.model.n_heads = 5;
  EXPECT_NE(error_of([&] {
              validate_config(c);
            }).find("model.n_heads = 5 does not divide model.d_model = 128"),
            std::string::npos);
  c = Config{};
  c.model.top_k = 9;
  EXPECT_NE(error_of([&] {
              validate_config(c);
            }).find("model.top_k = 9 must be between 1 and model.n_routed_experts = 8"),
            std::string::npos);
  c = Config{};
  c.data.format = DataFormat::kUint16;
  EXPECT_NE(error_of([&] { validate_config(c); }).find("needs data.val_path"), std::string::npos);
  EXPECT_NO_THROW(validate_config(Config{}));
}

// Every float key is bounded on both ends, so that inf and nan have nowhere to go; every range is
// enforced: just past each finite end, and inf, -inf and nan for floats, are refused by name.
TEST(Config, EveryNumberOutsideItsRangeIsRefused) {
  for (const auto& key : config_keys()) {
    Config c;
    const bool is_float = std::holds_alternative<double*>(key.bind(c));
    if (is_float) {
      ASSERT_TRUE(key.range) << key.name << " is a float key without a range";
      EXPECT_TRUE(std::isfinite(key.range->low) && std::isfinite(key.range->high)) << key.name;
    }
    if (!key.range) continue;
    std::vector<double> outside;
    if (std::isfinite(key.range->low))
      outside.push_back(key.range->low_open ? key.range->low
                        : is_float          ? std::nextafter(key.range->low, -INFINITY)
                                            : key.range->low - 1);
    if (std::isfinite(key.range->high))
      outside.push_back(key.range->high_open ? key.range->high
                        : is_float           ? std::nextafter(key.range->high, INFINITY)
                                             : key.range->high + 1);
    if (is_float)
      for (double special : {INFINITY, -INFINITY, NAN}) outside.push_back(special);
    for (double value : outside) {
      Config bad;
      std::visit(
          [&](const auto& bound) {
            using T = std::remove_pointer_t<std::decay_t<decltype(bound)>>;
            if constexpr (std::is_same_v<T, double>) *bound = value;
            if constexpr (std::is_same_v<T, int64_t>) *bound = static_cast<int64_t>(value);
          },
          key.bind(bad));
      const std::string e = error_of([&] { validate_config(bad); });
      EXPECT_EQ(e.rfind(std::string(key.name) + " = ", 0), 0u)
          << key.name << " = " << value << ": " << e;
      EXPECT_NE(e.find(": must be "), std::string::npos) << e;
      EXPECT_NE(e.find(range_string(*key.range, true) + "; set " + std::string(key.name)),
                std::string::npos)
          << e;
    }
  }
}

TEST(Config, RangesReadAsIntervals) {
  EXPECT_EQ(range_string(ValueRange::left_open(0, 1)), "(0, 1]");
  EXPECT_EQ(range_string(ValueRange::right_open(0, 1)), "[0, 1)");
  EXPECT_EQ(range_string(ValueRange::closed(0.01, 86400)), "[0.01, 86400]");
  EXPECT_EQ(range_string(ValueRange::closed(1, 1 << 24)), "[1, 2^24]");
  EXPECT_EQ(range_string(ValueRange::closed(1, 1 << 24), true), "[1, 2^24 = 16777216]");
  EXPECT_EQ(range_string(ValueRange::at_least(1)), ">= 1");
}

// Products of sizes are checked, each within its factors' ranges: a step's tensors and the
// model's parameters must stay addressable, and nothing on the way may wrap around.
TEST(Config, SizeProductsAreRefusedBeforeTheyOverflow) {
  Config c;
  c.model.seq_len = INT64_MAX;
  EXPECT_NE(error_of([&] { validate_config(c); })
                .find("train.batch_size * model.seq_len = 16 * 9223372036854775807 (the tokens of "
                      "a step) is more than 2^44 = 17592186044416 elements"),
            std::string::npos);
  c = Config{};
  c.model.n_heads = 1;
  c.model.seq_len = 1 << 21;
  EXPECT_NE(error_of([&] { validate_config(c); })
                .find("train.batch_size * model.n_heads * model.seq_len * model.seq_len = 16 * 1 "
                      "* 2097152 * 2097152 (the attention probabilities of a step) = "
                      "70368744177664 is more than 2^44"),
            std::string::npos);
  c = Config{};
  c.model.d_expert = int64_t{1} << 40;
  EXPECT_NE(error_of([&] {
              validate_config(c);
            }).find("lower model.n_routed_experts, model.d_expert or model.d_model"),
            std::string::npos);
  c = Config{};
  c.model.n_dense_layers = 0;
  c.model.d_ff = int64_t{1} << 62;  // unused without dense layers
  EXPECT_NO_THROW(validate_config(c));
}

TEST(Config, TimeoutMillisecondsFitAnInt) {
  CommConfig comm;
  comm.timeout_s = 86400;
  EXPECT_EQ(comm_timeout_ms(comm), 86400000);
  comm.timeout_s = 0.01;
  EXPECT_EQ(comm_timeout_ms(comm), 10);
  comm.timeout_s = 25 * 86400;  // 2.16e9 ms: past INT_MAX
  EXPECT_NE(error_of([&] {
              comm_timeout_ms(comm);
            }).find("comm.timeout_s = 2.16e+06: must be in [0.01, 86400]"),
            std::string::npos);
  EXPECT_EQ(rendezvous_timeout_ms(comm), 600000);  // the default, above comm.timeout_s's
  comm.rendezvous_timeout_s = 25 * 86400;
  EXPECT_NE(error_of([&] {
              rendezvous_timeout_ms(comm);
            }).find("comm.rendezvous_timeout_s = 2.16e+06: must be in [0.01, 86400]"),
            std::string::npos);
}

TEST(Config, JsonAndTextShowEveryKey) {
  Config c;
  c.model.d_model = 96;
  const auto json = config_to_json(c);
  EXPECT_EQ(json["model"]["d_model"], 96);
  EXPECT_EQ(json["data"]["format"], "text");
  const std::string text = config_to_string(c);
  for (const auto& key : config_keys())
    EXPECT_NE(text.find(std::string(key.name) + " = "), std::string::npos);
}

TEST(Config, ReferenceDocumentIsCurrent) {
  std::ifstream in(TANDEM_SOURCE_DIR "/docs/configuration.md");
  ASSERT_TRUE(in.good()) << "docs/configuration.md is missing";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), config_reference_markdown())
      << "regenerate with: build/bin/tandem-train --config-reference > docs/configuration.md";
}

}  // namespace
}  // namespace tandem
