// The unit of the model that schedules move around: a Block computes forward, then the gradient of
// its input (backward_input, "B"), and — possibly much later — the gradients of its weights
// (backward_weight, "W"). A block is local math: it never talks to another rank.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"

namespace tandem {

// What a parameter is to the parallelism: routed experts are split over the expert group and their
// gradients summed over expert-data-parallel replicas only; everything else is held by every
// data-parallel rank of its stage. Set where the parameter is made, so nothing has to read it out
// of the name.
enum class ParameterRole {
  kDense,         // attention, dense FFN, norms, embedding, head
  kRoutedExpert,  // one routed expert's w13 or w2
  kSharedExpert,  // the MoE layer's shared expert(s)
  kRouter,        // the MoE layer's router matrix
};

struct Parameter {
  std::string name;  // "layers.3.ffn.experts.5.w13": stable across grids, seeds the init
  Tensor value;
  Tensor grad;
  bool decay = true;  // AdamW weight decay applies (matrices) or not (norm gains)
  ParameterRole role = ParameterRole::kDense;
};

// Elements [begin, end) of a parameter's flattened value that one optimizer updates, with the
// flat tensors ([end - begin]) it writes and reads: views of the parameter's own value and grad
// (one process, plain data parallelism), or of a ZeRO-1 shard's buffers.
struct ParameterSlice {
  const Parameter* param = nullptr;  // name, shape, decay
  int64_t begin = 0;
  int64_t end = 0;
  Tensor value;
  Tensor grad;
  // The whole parameter, through its own tensors.
  static ParameterSlice whole(Parameter& p);
};

// What one micro-batch's forward left behind for its backward. backward_input queues the weight
// gradient work (with the tensors it needs) in deferred_wgrad; backward_weight runs it.
struct BlockState {
  virtual ~BlockState() = default;
  std::vector<std::function<void()>> deferred_wgrad;
};

// Runs and clears the weight-gradient work queued in a state.
void run_deferred_wgrad(BlockState& state);

class Block {
 public:
  virtual ~Block() = default;
  virtual std::string name() const = 0;
  // Input is hidden states [N, d] (tokens int32 [N] for the embedding); output [N, d].
  virtual Tensor forward(const Tensor& x, std::unique_ptr<BlockState>& state) = 0;
  // Returns the input gradient (undefined for the embedding) and queues the weight gradients.
  virtual Tensor backward_input(const Tensor& dy, BlockState& state) = 0;
  // Accumulates this micro-batch's weight gradients into the parameters' grad tensors.
  void backward_weight(BlockState& state) { run_deferred_wgrad(state); }
  virtual std::vector<Parameter*> parameters() = 0;
};

// Makes a parameter of the given shape, initialised from (seed, name) and with a zero gradient.
Parameter make_parameter(std::string name, ParameterRole role, Shape shape, DType dtype,
                         double init_std, uint64_t seed, bool decay = true);
// A gain parameter initialised to ones (norms), never decayed.
Parameter make_ones_parameter(std::string name, ParameterRole role, Shape shape, DType dtype);

}  // namespace tandem
