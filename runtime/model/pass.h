// What a forward pass is for. Training keeps what the backward needs, and the head forms the loss
// gradient scaled by grad_scale: 1 / (tokens in the global batch), so that micro-batch gradients
// add up to the gradient of the mean loss. Evaluation forms the loss alone and keeps nothing for a
// backward, which is then refused.
#pragma once

#include <cmath>

#include "runtime/core/errors.h"

namespace tandem {

class Pass {
 public:
  static Pass train(double grad_scale) {
    TANDEM_CHECK(std::isfinite(grad_scale) && grad_scale > 0,
                 "a training pass needs a positive loss scale (1 / tokens in the global batch), "
                 "not ",
                 grad_scale, "; a forward without gradients is Pass::evaluate()");
    return Pass(true, grad_scale);
  }
  static Pass evaluate() { return Pass(false, 0); }

  bool training() const { return training_; }
  double grad_scale() const {
    TANDEM_CHECK(training_, "an evaluation pass has no loss scale");
    return grad_scale_;
  }

 private:
  Pass(bool training, double grad_scale) : training_(training), grad_scale_(grad_scale) {}
  bool training_;
  double grad_scale_;
};

}  // namespace tandem
