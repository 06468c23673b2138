// What a checkpoint would do with an engine's TrainingState, for the round-trip tests: a deep copy
// of it by name, loading such a copy into another engine (of the same grid), and a bitwise
// comparison of two copies.
#pragma once

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "runtime/train/train_engine.h"

namespace tandem::testing {

struct SavedMoments {
  int64_t begin = 0, end = 0;
  Tensor m, v;
};

struct SavedState {
  std::map<std::string, Tensor> parameters, buffers;
  std::map<std::string, SavedMoments> moments;
  int64_t steps_taken = 0;
};

inline SavedState save_state(TrainEngine& engine) {
  const TrainingState state = engine.state();
  SavedState out;
  for (const Parameter* p : state.parameters) out.parameters[p->name] = p->value.clone();
  for (const NamedTensor& b : state.buffers) out.buffers[b.name] = b.values.clone();
  for (const AdamW::Moments& m : state.moments)
    out.moments[m.name] = {m.begin, m.end, m.m.clone(), m.v.clone()};
  out.steps_taken = state.steps_taken;
  return out;
}

// Which parts to load: a test leaves one out to show that the continuation needs it.
struct LoadParts {
  bool parameters = true, buffers = true, moments = true;
};

inline void load_state(const SavedState& saved, TrainEngine& engine, LoadParts parts = {}) {
  TrainingState state = engine.state();
  auto find = [](const auto& map, const std::string& name) -> const auto& {
    auto it = map.find(name);
    TANDEM_CHECK(it != map.end(), "the saved state has no ", name);
    return it->second;
  };
  if (parts.parameters)
    for (Parameter* p : state.parameters) p->value.copy_from(find(saved.parameters, p->name));
  if (parts.buffers)
    for (NamedTensor& b : state.buffers) b.values.copy_from(find(saved.buffers, b.name));
  if (parts.moments) {
    for (AdamW::Moments& m : state.moments) {
      const SavedMoments& from = find(saved.moments, m.name);
      TANDEM_CHECK(from.begin == m.begin && from.end == m.end, "saved moments of ", m.name,
                   " cover another range");
      m.m.copy_from(from.m);
      m.v.copy_from(from.v);
    }
  }
  engine.set_steps_taken(saved.steps_taken);
}

inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The names whose tensors differ in any bit (or exist in one state only); empty when a and b are
// the same state.
inline std::vector<std::string> differences(const SavedState& a, const SavedState& b) {
  std::vector<std::string> out;
  auto compare = [&](const auto& x, const auto& y, const std::string& kind, auto equal) {
    for (const auto& [name, value] : x) {
      auto it = y.find(name);
      if (it == y.end() || !equal(value, it->second)) out.push_back(kind + name);
    }
    for (const auto& [name, value] : y)
      if (!x.count(name)) out.push_back(kind + name);
  };
  compare(a.parameters, b.parameters, "", same_bits);
  compare(a.buffers, b.buffers, "", same_bits);
  compare(a.moments, b.moments, "moments of ", [](const SavedMoments& x, const SavedMoments& y) {
    return x.begin == y.begin && x.end == y.end && same_bits(x.m, y.m) && same_bits(x.v, y.v);
  });
  if (a.steps_taken != b.steps_taken) out.push_back("steps_taken");
  return out;
}

}  // namespace tandem::testing
