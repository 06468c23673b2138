// Parameter construction, whole-parameter slices and the generic deferred-weight-gradient runner.
#include "runtime/model/block.h"

#include "runtime/core/random.h"

namespace tandem {

void run_deferred_wgrad(BlockState& state) {
  for (auto& work : state.deferred_wgrad) work();
  state.deferred_wgrad.clear();
}

ParameterSlice ParameterSlice::whole(Parameter& p) {
  const int64_t n = p.value.numel();
  return {&p, 0, n, p.value.reshape({n}), p.grad.reshape({n})};
}

Parameter make_parameter(std::string name, ParameterRole role, Shape shape, DType dtype,
                         double init_std, uint64_t seed, bool decay) {
  Parameter p{std::move(name), Tensor::empty(shape, dtype), Tensor::zeros(shape, dtype), decay,
              role};
  fill_normal(p.value, init_std, seed, stream_of(p.name));
  return p;
}

Parameter make_ones_parameter(std::string name, ParameterRole role, Shape shape, DType dtype) {
  Parameter p{std::move(name), Tensor::empty(shape, dtype), Tensor::zeros(shape, dtype), false,
              role};
  fill_constant(p.value, 1.0);
  return p;
}

}  // namespace tandem
