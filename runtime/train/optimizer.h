// AdamW over a set of parameters, with moments kept in the parameters' dtype (fp32 master
// weights), global-norm clipping and weight decay on matrices only.
#pragma once

#include <vector>

#include "runtime/core/config.h"
#include "runtime/model/block.h"

namespace tandem {

class AdamW {
 public:
  AdamW(std::vector<Parameter*> params, const TrainConfig& config);
  // √(Σ grad²) over every parameter of this optimizer.
  double grad_norm() const;
  // Scales gradients by clip_coefficient, then applies one AdamW update at learning rate lr.
  void step(double lr, double clip_coefficient);
  void zero_grad();
  int64_t steps_taken() const { return steps_; }

 private:
  std::vector<Parameter*> params_;
  std::vector<Tensor> m_, v_;
  TrainConfig config_;
  int64_t steps_ = 0;
};

}  // namespace tandem
