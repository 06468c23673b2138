// AdamW over parameter slices, with flat moment storage addressed by parameter name.
#include "runtime/train/optimizer.h"

#include <algorithm>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"

namespace tandem {

AdamW::AdamW(std::vector<ParameterSlice> slices, const TrainConfig& config)
    : slices_(std::move(slices)),
      beta1_(config.beta1),
      beta2_(config.beta2),
      eps_(config.adam_eps),
      weight_decay_(config.weight_decay) {
  int64_t total = 0;
  const DType dtype = slices_.empty() ? DType::kF32 : slices_[0].value.dtype();
  const Device device = slices_.empty() ? Device::cpu() : slices_[0].value.device();
  for (size_t i = 0; i < slices_.size(); ++i) {
    const ParameterSlice& s = slices_[i];
    const std::string& name = s.param->name;
    TANDEM_CHECK(0 <= s.begin && s.begin <= s.end && s.end <= s.param->value.numel(),
                 "AdamW slice [", s.begin, ", ", s.end, ") of ", name, " with ",
                 s.param->value.numel(), " elements");
    check_shape(s.value, {s.end - s.begin}, "AdamW slice values");
    check_shape(s.grad, {s.end - s.begin}, "AdamW slice gradient");
    TANDEM_CHECK(s.value.dtype() == dtype && s.grad.dtype() == dtype, "AdamW slice of ", name,
                 " in ", dtype_name(s.value.dtype()), " among slices in ", dtype_name(dtype));
    TANDEM_CHECK(s.value.device() == device && s.grad.device() == device, "AdamW slice of ", name,
                 " on ", s.value.device().to_string(), " among slices on ", device.to_string());
    TANDEM_CHECK(slice_of_name_.emplace(name, i).second, "AdamW given two slices of ", name);
    offsets_.push_back(total);
    total += s.end - s.begin;
  }
  m_ = Tensor::zeros({total}, dtype, device);
  v_ = Tensor::zeros({total}, dtype, device);
}

void AdamW::step(double lr, double clip_coefficient) {
  ++steps_;
  for (size_t i = 0; i < slices_.size(); ++i) {
    ParameterSlice& s = slices_[i];
    if (clip_coefficient != 1.0) kernels::scale(s.grad, clip_coefficient);
    const kernels::AdamWHyper hyper{
        lr, beta1_, beta2_, eps_, s.param->decay ? weight_decay_ : 0.0, steps_};
    const int64_t n = s.end - s.begin;
    Tensor m = m_.rows(offsets_[i], offsets_[i] + n);
    Tensor v = v_.rows(offsets_[i], offsets_[i] + n);
    kernels::adamw_update(s.value, s.grad, m, v, hyper);
  }
}

void AdamW::set_steps_taken(int64_t steps) {
  TANDEM_CHECK(steps >= 0, "AdamW step count ", steps, " is negative");
  steps_ = steps;
}

std::vector<AdamW::Moments> AdamW::moments() const {
  std::vector<Moments> out;
  for (size_t i = 0; i < slices_.size(); ++i) {
    const ParameterSlice& s = slices_[i];
    const int64_t n = s.end - s.begin;
    out.push_back({s.param->name, s.param->value.shape(), s.begin, s.end,
                   m_.rows(offsets_[i], offsets_[i] + n), v_.rows(offsets_[i], offsets_[i] + n)});
  }
  return out;
}

int64_t AdamW::set_moments(const std::string& name, int64_t begin, const Tensor& m,
                           const Tensor& v) {
  auto it = slice_of_name_.find(name);
  TANDEM_CHECK(it != slice_of_name_.end(), "AdamW holds no part of ", name);
  TANDEM_CHECK(m.ndim() == 1 && m.shape() == v.shape(), "moments of ", name, " of shapes ",
               shape_string(m.shape()), " and ", shape_string(v.shape()),
               ": expected two flat ranges of the same length");
  const ParameterSlice& s = slices_[it->second];
  const int64_t from = std::max(begin, s.begin), to = std::min(begin + m.numel(), s.end);
  if (from >= to) return 0;
  const int64_t at = offsets_[it->second] + from - s.begin;
  m_.rows(at, at + to - from).copy_from(m.rows(from - begin, to - begin));
  v_.rows(at, at + to - from).copy_from(v.rows(from - begin, to - begin));
  return to - from;
}

}  // namespace tandem
