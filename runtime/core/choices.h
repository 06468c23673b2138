// Every configuration value that is one of a fixed set of names, as an enum with its names. Names
// are parsed once, where a config or command line is read (case-insensitively, the nearest valid
// name suggested), so the code behind that boundary compares enums, never strings.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/dtype.h"

namespace tandem {

enum class ScheduleKind { k1F1B, kZBH1, kDualPipe, kDualPipeV };
// comm.world and each traffic class's backend; kAuto is resolved before a group is opened.
enum class CommBackend { kAuto, kMpi, kUcx, kNccl };
enum class ExpertDispatchMode { kFlat, kHierarchical };
enum class ExpertExchange { kAuto, kSharedMemory, kMessages };
enum class DataFormat { kText, kUint16 };
enum class Fp8Format : uint8_t { kE4M3, kE5M2 };
// Where tensors live and kernels run (train.device names it).
enum class DeviceType : uint8_t { kCPU, kCUDA };

// Choices<E>::names lists (value, name) for every value of E a user may write.
template <class E>
struct Choices;
template <>
struct Choices<ScheduleKind> {
  static constexpr std::array<std::pair<ScheduleKind, std::string_view>, 4> names{
      {{ScheduleKind::k1F1B, "1f1b"},
       {ScheduleKind::kZBH1, "zb-h1"},
       {ScheduleKind::kDualPipe, "dualpipe"},
       {ScheduleKind::kDualPipeV, "dualpipev"}}};
};
template <>
struct Choices<CommBackend> {
  static constexpr std::array<std::pair<CommBackend, std::string_view>, 4> names{
      {{CommBackend::kAuto, "auto"},
       {CommBackend::kMpi, "mpi"},
       {CommBackend::kUcx, "ucx"},
       {CommBackend::kNccl, "nccl"}}};
};
template <>
struct Choices<ExpertDispatchMode> {
  static constexpr std::array<std::pair<ExpertDispatchMode, std::string_view>, 2> names{
      {{ExpertDispatchMode::kFlat, "flat"}, {ExpertDispatchMode::kHierarchical, "hierarchical"}}};
};
template <>
struct Choices<ExpertExchange> {
  static constexpr std::array<std::pair<ExpertExchange, std::string_view>, 3> names{
      {{ExpertExchange::kAuto, "auto"},
       {ExpertExchange::kSharedMemory, "shared_memory"},
       {ExpertExchange::kMessages, "messages"}}};
};
template <>
struct Choices<DeviceType> {
  static constexpr std::array<std::pair<DeviceType, std::string_view>, 2> names{
      {{DeviceType::kCPU, "cpu"}, {DeviceType::kCUDA, "cuda"}}};
};
template <>
struct Choices<DataFormat> {
  static constexpr std::array<std::pair<DataFormat, std::string_view>, 2> names{
      {{DataFormat::kText, "text"}, {DataFormat::kUint16, "uint16"}}};
};
template <>
struct Choices<Fp8Format> {
  static constexpr std::array<std::pair<Fp8Format, std::string_view>, 2> names{
      {{Fp8Format::kE4M3, "e4m3"}, {Fp8Format::kE5M2, "e5m2"}}};
};
// The model's dtype: only the two the CPU path computes in.
template <>
struct Choices<DType> {
  static constexpr std::array<std::pair<DType, std::string_view>, 2> names{
      {{DType::kF32, "fp32"}, {DType::kF64, "fp64"}}};
};

// The name of a value ("?" for one that has none, which no parsed value can be).
template <class E>
std::string_view choice_name(E value) {
  for (const auto& [v, name] : Choices<E>::names)
    if (v == value) return name;
  return "?";
}

template <class E>
std::vector<std::string_view> choice_names() {
  std::vector<std::string_view> out;
  for (const auto& entry : Choices<E>::names) out.push_back(entry.second);
  return out;
}

bool equal_ignoring_case(std::string_view a, std::string_view b);
// "\"a\", \"b\", \"c\"": the names as a message lists them.
std::string quoted_names(const std::vector<std::string_view>& names);
// `what = "text" is not one of "a", "b"; did you mean "b"?` (the nearest by edit distance).
std::string unknown_choice_message(std::string_view what, std::string_view text,
                                   const std::vector<std::string_view>& names);
[[noreturn]] void throw_unknown_choice(std::string_view what, std::string_view text,
                                       const std::vector<std::string_view>& names);

template <class E>
std::optional<E> find_choice(std::string_view text) {
  for (const auto& [value, name] : Choices<E>::names)
    if (equal_ignoring_case(text, name)) return value;
  return std::nullopt;
}

// Parses a user's text; throws an Error naming `what` (a key or flag) and the choices.
template <class E>
E parse_choice(std::string_view text, std::string_view what) {
  if (std::optional<E> value = find_choice<E>(text)) return *value;
  throw_unknown_choice(what, text, choice_names<E>());
}

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace tandem
