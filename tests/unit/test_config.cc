// Configuration: parsing, unknown-key suggestions, type errors, overrides, validation, and the
// generated reference in docs/ staying equal to the key table.
#include <gtest/gtest.h>

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
