// MoE FFN sub-layer: routing, grouped experts, shared expert, and the one walk through them.
#include "runtime/model/moe_block.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/router.h"
#include "runtime/model/moe_exchange.h"

namespace tandem {

MoeFfnBlock::MoeFfnBlock(const ModelConfig& config, int64_t layer, DType dtype, uint64_t seed,
                         Fp8Settings fp8, ExpertShard shard)
    : config_(config), fp8_(fp8), layer_(layer) {
  const int64_t d = config.d_model, f = config.d_expert, e = config.n_routed_experts;
  const double out_std = config.init_std / std::sqrt(2.0 * config.n_layers);
  norm_ = make_ones_parameter(name() + ".norm", ParameterRole::kDense, {d}, dtype);
  router_ = make_parameter(name() + ".router", ParameterRole::kRouter, {e, d}, dtype,
                           config.init_std, seed);
  // n shared experts of width d_expert are one SwiGLU of width n·d_expert.
  const int64_t shared_f = std::max<int64_t>(1, config.n_shared_experts) * f;
  shared_w13_ = make_parameter(name() + ".shared.w13", ParameterRole::kSharedExpert,
                               {2 * shared_f, d}, dtype, config.init_std, seed);
  shared_w2_ = make_parameter(name() + ".shared.w2", ParameterRole::kSharedExpert, {d, shared_f},
                              dtype, out_std, seed);
  TANDEM_USER_CHECK(
      shard.count >= 1 && e % shard.count == 0 && shard.index >= 0 && shard.index < shard.count,
      "model.n_routed_experts = ", e, " cannot be split into ", shard.count,
      " equal expert-parallel slices (parallel.ep must divide it)");
  first_expert_ = shard.index * (e / shard.count);
  for (int64_t x = first_expert_; x < first_expert_ + e / shard.count; ++x) {
    const std::string prefix = name() + ".experts." + std::to_string(x);
    w13_.push_back(make_parameter(prefix + ".w13", ParameterRole::kRoutedExpert, {2 * f, d}, dtype,
                                  config.init_std, seed));
    w2_.push_back(
        make_parameter(prefix + ".w2", ParameterRole::kRoutedExpert, {d, f}, dtype, out_std, seed));
  }
  bias_ = Tensor::zeros({e}, dtype);
  load_.assign(e, 0);
}

std::vector<Parameter*> MoeFfnBlock::parameters() {
  std::vector<Parameter*> out = {&norm_, &router_};
  if (config_.n_shared_experts > 0) out.insert(out.end(), {&shared_w13_, &shared_w2_});
  for (size_t x = 0; x < w13_.size(); ++x) out.insert(out.end(), {&w13_[x], &w2_[x]});
  return out;
}

void MoeFfnBlock::route(const Tensor& x, MoeState& st) {
  const int64_t n = x.dim(0), k = config_.top_k, e = n_experts();
  st.normed = rmsnorm(x, norm_, config_.norm_eps, st.norm);
  Tensor logits = linear(st.normed, router_);
  st.affinity = Tensor::empty({n, e}, x.dtype(), x.device());
  st.expert_ids = Tensor::empty({n, k}, DType::kI32, x.device());
  st.gate_weights = Tensor::empty({n, k}, x.dtype(), x.device());
  kernels::router_forward(logits, bias_, k, st.affinity, st.expert_ids, st.gate_weights,
                          {config_.n_expert_groups, config_.max_groups_per_token});
  kernels::count_expert_load(st.expert_ids, load_);
  st.plan = kernels::make_permute_plan(st.expert_ids, e);
}

Tensor MoeFfnBlock::run_experts(const Tensor& rows, const std::vector<int64_t>& expert_offsets,
                                MoeState& st, Tensor out) {
  const int64_t e = static_cast<int64_t>(expert_offsets.size()) - 1;
  TANDEM_CHECK(e == n_local_experts() && expert_offsets.back() == rows.dim(0),
               "run_experts: ", rows.dim(0), " rows for offsets ending at ", expert_offsets.back(),
               " over ", e, " experts (this block holds ", n_local_experts(), ")");
  st.expert_offsets = expert_offsets;
  st.experts.assign(e, MlpSaved{});
  if (!out.defined()) out = Tensor::empty(rows.shape(), rows.dtype(), rows.device());
  check_shape(out, rows.shape(), "expert outputs");
  for (int64_t x = 0; x < e; ++x) {
    const int64_t begin = expert_offsets[x], end = expert_offsets[x + 1];
    if (begin == end) continue;
    Tensor y = swiglu_mlp(rows.rows(begin, end), w13_[x], w2_[x], fp8_, st.experts[x]);
    out.rows(begin, end).copy_from(y);
  }
  return out;
}

void MoeFfnBlock::run_shared(MoeState& st) {
  if (config_.n_shared_experts > 0)
    st.shared_out = swiglu_mlp(st.normed, shared_w13_, shared_w2_, fp8_, st.shared);
}

Tensor MoeFfnBlock::add_routed(const Tensor& x, Tensor routed, MoeState& st, Tensor slot_rows) {
  if (slot_rows.defined()) st.expert_out = slot_rows;
  kernels::axpy(1.0, x, routed);
  if (st.shared_out.defined()) kernels::axpy(1.0, st.shared_out, routed);
  return routed;
}

PhasedTask MoeFfnBlock::forward_task(Tensor x, MoeState& st, MoeExchange& exchange, Tensor* y) {
  route(x, st);
  co_await until_done{exchange.start_plan(*this, st)};
  InFlight& dispatched = exchange.start_dispatch(*this, st);
  run_shared(st);  // the shared expert needs no other rank: it runs while the rows travel
  co_await until_done{dispatched};
  const ExpertRows rows = exchange.received_rows(*this, st);
  const Tensor expert_out = run_experts(rows.rows, rows.expert_offsets, st, rows.output);
  co_await until_done{exchange.start_combine(*this, expert_out, st)};
  CombinedRows combined = exchange.combined(st);
  *y = add_routed(x, std::move(combined.routed), st, combined.slot_rows);
}

PhasedTask MoeFfnBlock::backward_task(Tensor dy, MoeState& st, MoeExchange& exchange, Tensor* dx,
                                      std::function<void(bool experts_queued)> in_gap) {
  InFlight& to_experts = exchange.start_combine_backward(*this, dy, st);
  if (in_gap) in_gap(false);
  co_await until_done{to_experts};
  const Tensor d_rows = experts_backward(exchange.received_output_grads(st), st);
  InFlight& from_experts = exchange.start_dispatch_backward(*this, d_rows, st);
  if (in_gap) in_gap(true);
  co_await until_done{from_experts};
  *dx = route_backward(dy, exchange.received_token_grads(st), st);
}

Tensor MoeFfnBlock::forward(const Tensor& x, std::unique_ptr<BlockState>& state) {
  auto st = std::make_unique<MoeState>();
  LocalMoeExchange local;
  Tensor y;
  forward_task(x, *st, local, &y).run_to_end();
  state = std::move(st);
  return y;
}

Tensor MoeFfnBlock::unpermute_backward(const Tensor& dy, MoeState& st) {
  Tensor dexpert_out = Tensor::empty(st.expert_out.shape(), dy.dtype(), dy.device());
  st.dgate_weights = Tensor::empty(st.gate_weights.shape(), dy.dtype(), dy.device());
  kernels::unpermute_weighted_backward(dy, st.expert_out, st.gate_weights, st.plan, dexpert_out,
                                       st.dgate_weights);
  return dexpert_out;
}

Tensor MoeFfnBlock::experts_backward(const Tensor& dexpert_out, MoeState& st) {
  Tensor drows = Tensor::empty(dexpert_out.shape(), dexpert_out.dtype(), dexpert_out.device());
  for (int64_t x = 0; x < n_local_experts(); ++x) {
    const int64_t begin = st.expert_offsets[x], end = st.expert_offsets[x + 1];
    if (begin == end) continue;
    Tensor dx =
        swiglu_mlp_backward(dexpert_out.rows(begin, end), st.experts[x], w13_[x], w2_[x], fp8_, st);
    drows.rows(begin, end).copy_from(dx);
  }
  return drows;
}

Tensor MoeFfnBlock::route_backward(const Tensor& dy, Tensor dnormed, MoeState& st) {
  const int64_t n = dy.dim(0);
  Tensor dlogits = Tensor::empty({n, n_experts()}, dy.dtype(), dy.device());
  kernels::router_backward(st.dgate_weights, st.affinity, st.expert_ids, dlogits);
  kernels::axpy(1.0, linear_backward(dlogits, st.normed, router_, st), dnormed);
  if (config_.n_shared_experts > 0)
    kernels::axpy(1.0, swiglu_mlp_backward(dy, st.shared, shared_w13_, shared_w2_, fp8_, st),
                  dnormed);
  Tensor dx = rmsnorm_backward(dnormed, st.norm, norm_, st);
  kernels::axpy(1.0, dy, dx);
  return dx;
}

Tensor MoeFfnBlock::backward_input(const Tensor& dy, BlockState& state) {
  LocalMoeExchange local;
  Tensor dx;
  backward_task(dy, static_cast<MoeState&>(state), local, &dx).run_to_end();
  return dx;
}

void MoeFfnBlock::set_bias(const Tensor& bias) {
  TANDEM_CHECK(bias.shape() == bias_.shape() && bias.dtype() == bias_.dtype(),
               "router bias of shape ", bias.numel(), " for ", bias_.numel(), " experts");
  bias_.copy_from(bias);
}

void MoeFfnBlock::update_bias(const std::vector<int64_t>& global_load) {
  kernels::update_router_bias(global_load, config_.router_bias_update_rate, bias_);
}

}  // namespace tandem
