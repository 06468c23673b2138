// AdamW over parameter lists.
#include "runtime/train/optimizer.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"

namespace tandem {

AdamW::AdamW(std::vector<Parameter*> params, const TrainConfig& config)
    : params_(std::move(params)), config_(config) {
  for (Parameter* p : params_) {
    m_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype()));
    v_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype()));
  }
}

double AdamW::grad_norm() const {
  double total = 0;
  for (Parameter* p : params_) total += kernels::sum_of_squares(p->grad);
  return std::sqrt(total);
}

void AdamW::step(double lr, double clip_coefficient) {
  ++steps_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    if (clip_coefficient != 1.0) kernels::scale(p.grad, clip_coefficient);
    kernels::AdamWHyper hyper{
        lr,    config_.beta1, config_.beta2, config_.adam_eps, p.decay ? config_.weight_decay : 0.0,
        steps_};
    kernels::adamw_update(p.value, p.grad, m_[i], v_[i], hyper);
  }
}

void AdamW::zero_grad() {
  for (Parameter* p : params_) p->grad.zero_();
}

}  // namespace tandem
