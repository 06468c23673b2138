// AdamW (Loshchilov & Hutter: decoupled weight decay, bias correction) over slices of parameters:
// whole parameters in one process and under plain data parallelism, this rank's ZeRO-1 shard of
// them otherwise — one implementation and one step counter for all three. The moments are kept
// by parameter name and element range, so a checkpoint can save each rank's part of them and a
// run on another grid can load them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/core/config.h"
#include "runtime/model/block.h"

namespace tandem {

class AdamW {
 public:
  // m and v of one slice: elements [begin, end) of the named parameter's flattened values.
  struct Moments {
    std::string name;
    Shape shape;  // of the whole parameter
    int64_t begin = 0;
    int64_t end = 0;
    Tensor m, v;  // [end - begin], sharing storage with the optimizer's
  };

  // The moments start at zero, in the slices' dtype (fp32 master weights). A parameter may give
  // at most one slice. Weight decay applies to the slices whose parameter has decay set.
  AdamW(std::vector<ParameterSlice> slices, const TrainConfig& config);
  // Scales every slice's gradient by clip_coefficient (in place), then applies one update at
  // learning rate lr.
  void step(double lr, double clip_coefficient);
  int64_t steps_taken() const { return steps_; }
  // Resumes a count (a checkpoint's): the next step's bias correction is that of step steps + 1.
  void set_steps_taken(int64_t steps);
  const std::vector<ParameterSlice>& slices() const { return slices_; }
  // Every slice's moments, in slice order.
  std::vector<Moments> moments() const;
  // Loads moments of the named parameter's elements [begin, begin + m.numel()) — a whole
  // parameter's, or one saved shard of them — into the part of them this optimizer holds, and
  // returns how many elements that was (0 when the ranges do not meet), so a loader assembling a
  // slice from several saved shards can check that it covered it.
  int64_t set_moments(const std::string& name, int64_t begin, const Tensor& m, const Tensor& v);
  // Elements of m and v together.
  int64_t state_elements() const { return m_.numel() + v_.numel(); }

 private:
  std::vector<ParameterSlice> slices_;
  std::vector<int64_t> offsets_;  // of each slice in m_ and v_
  std::map<std::string, size_t, std::less<>> slice_of_name_;
  Tensor m_, v_;  // flat, the slices one after another
  double beta1_, beta2_, eps_, weight_decay_;
  int64_t steps_ = 0;
};

}  // namespace tandem
