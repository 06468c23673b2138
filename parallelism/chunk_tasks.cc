// The chunk walk with expert dispatch and combine between the MoE sub-stages. With FP8 on, the
// dispatched rows travel as FP8 codes with their 1×128 scales (the quantisation the first expert
// GEMM would apply anyway, so the experts see the same numbers as on one rank).
#include "parallelism/chunk_tasks.h"

#include <chrono>

namespace tandem::parallel {

namespace {

Tensor received(comm::PendingRows& pending, AllToAllStats* stats) {
  if (stats) stats->bytes += pending.bytes_to_peers, stats->calls += 1;
  return pending.wait();
}

// The token rows as they travel to the experts: fp32 as they are, or FP8-packed under fp8 (each
// row quantized on its own, so packing before the copies are made is the same as after).
Tensor dispatch_payload(const Tensor& tokens, const Fp8Settings& fp8) {
  if (!fp8.enabled) return tokens;
  return kernels::pack_fp8_rows(
      kernels::quantize(tokens, kernels::ScaleGranularity::kTile1x128, fp8.options));
}

Tensor expert_input(const Tensor& received, int64_t cols, const Fp8Settings& fp8) {
  if (!fp8.enabled) return received;
  return kernels::dequantize(kernels::unpack_fp8_rows(received, cols, fp8.options.format));
}

// What the hierarchical path keeps for the backward.
struct HierarchicalSaved {
  comm::HierarchicalLayout layout;
  Tensor copy_out;  // expert outputs as they reached the forwarding rank
};

// Runs one synchronous hierarchical exchange and books it: all of its time is exposed, and the
// rows it sent across nodes are its bytes (the fan-out inside a node is not counted).
template <class Exchange>
auto booked(Exchange exchange, comm::HierarchicalDispatcher& dispatcher, int64_t row_bytes,
            AllToAllStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  auto result = exchange();
  if (stats) {
    stats->wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats->bytes += dispatcher.rows_sent_across_nodes() * row_bytes;
    stats->calls += 1;
  }
  return result;
}

Tensor hierarchical_forward(MoeFfnBlock& moe, const Tensor& x, MoeState& st,
                            comm::HierarchicalDispatcher& dispatcher, AllToAllStats* stats) {
  const int64_t row = static_cast<int64_t>(comm::row_bytes(x));
  moe.route(x, st);
  HierarchicalSaved saved;
  saved.layout = dispatcher.plan(st.expert_ids, st.gate_weights);
  const Tensor rows =
      booked([&] { return dispatcher.dispatch(st.normed, saved.layout); }, dispatcher, row, stats);
  moe.run_shared(st);
  const Tensor out = moe.run_experts(rows, saved.layout.node.expert_offsets, st);
  const Tensor routed = booked(
      [&] { return dispatcher.combine(out, saved.layout, &saved.copy_out); }, dispatcher, 0, stats);
  st.dispatch = std::move(saved);
  return moe.add_routed(x, routed, st);
}

Tensor hierarchical_backward(MoeFfnBlock& moe, const Tensor& dy, MoeState& st,
                             comm::HierarchicalDispatcher& dispatcher, AllToAllStats* stats) {
  const auto& saved = std::any_cast<const HierarchicalSaved&>(st.dispatch);
  Tensor d_gates;
  const Tensor d_out =
      booked([&] { return dispatcher.combine_backward(dy, saved.copy_out, saved.layout, d_gates); },
             dispatcher, 0, stats);
  st.dgate_weights = d_gates;
  const Tensor d_rows = moe.experts_backward(d_out, st);
  const Tensor d_routed = booked([&] { return dispatcher.dispatch_backward(d_rows, saved.layout); },
                                 dispatcher, 0, stats);
  return moe.route_backward_summed(dy, d_routed, st);
}

}  // namespace

PhasedTask forward_task(ModelChunk& chunk, Tensor input, MicroBatchState& state,
                        const Tensor* targets, double grad_scale, Tensor* output, ChunkComm comm) {
  const std::vector<Block*> blocks = chunk.blocks();
  state.blocks.resize(blocks.size());
  Tensor x = input;
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto* moe = dynamic_cast<MoeFfnBlock*>(blocks[i]);
    if (moe && comm.hierarchical) {
      auto owned = std::make_unique<MoeState>();
      x = hierarchical_forward(*moe, x, *owned, *comm.hierarchical, comm.stats);
      state.blocks[i] = std::move(owned);
      continue;
    }
    if (!moe || !comm.forward) {
      x = blocks[i]->forward(x, state.blocks[i]);
      continue;
    }
    comm::ExpertDispatcher& dispatcher = *comm.forward;
    auto owned = std::make_unique<MoeState>();
    MoeState& st = *owned;
    state.blocks[i] = std::move(owned);
    moe->route(x, st);
    comm::PendingPlan counts = dispatcher.start_plan(st.expert_ids);
    int64_t a2a = all_to_all_started(comm.events);
    co_await until_done{counts.handle};
    all_to_all_done(comm.events, a2a);
    const comm::DispatchLayout layout = dispatcher.finish_plan(counts);
    // Each token row goes once per routed expert; the dispatcher makes the copies as it sends.
    comm::PendingRows dispatched =
        dispatcher.start_dispatch(dispatch_payload(st.normed, moe->fp8()), layout);
    a2a = all_to_all_started(comm.events);
    moe->run_shared(st);  // the shared expert needs no other rank: it runs under the dispatch
    co_await until_done{dispatched.handle};
    all_to_all_done(comm.events, a2a);
    const Tensor rows = expert_input(received(dispatched, comm.stats), x.dim(1), moe->fp8());
    const Tensor expert_out = moe->run_experts(
        rows, layout.expert_offsets, st, dispatcher.expert_output(rows.shape(), rows.dtype()));
    comm::PendingRows combined =
        dispatcher.start_combine(expert_out, st.gate_weights, layout, /*keep_slot_rows=*/true);
    a2a = all_to_all_started(comm.events);
    co_await until_done{combined.handle};
    all_to_all_done(comm.events, a2a);
    x = moe->add_routed(x, received(combined, comm.stats), st, combined.slot_rows);
    st.dispatch = layout;
  }
  if (!chunk.head()) {
    *output = x;
    co_return;
  }
  TANDEM_CHECK(targets != nullptr, "the chunk with the head needs targets");
  state.loss_sum = chunk.head()->forward_loss(x, *targets, grad_scale, state.head);
  if (grad_scale == 0) state.blocks.clear();  // evaluation: nothing is kept for a backward
}

PhasedTask backward_task(ModelChunk& chunk, Tensor dy, MicroBatchState& state, Tensor* dx,
                         ChunkComm comm, bool weights_in_gaps,
                         std::function<void(size_t block)> after_block) {
  const std::vector<Block*> blocks = chunk.blocks();
  TANDEM_CHECK(state.blocks.size() == blocks.size(), "backward without a matching forward");
  Tensor grad = chunk.head() ? chunk.head()->backward_input(*state.head) : dy;
  // Weight gradients queued by the blocks from `first` on (and the head) that have not run yet.
  // A block is reported complete once its input gradient is done too (nothing more can be
  // queued for it): blocks from input_done on.
  size_t input_done = blocks.size(), reported = blocks.size() + 1;
  auto run_weights_from = [&](size_t first) {
    if (!weights_in_gaps) return;
    record_event(comm.events, StepEventKind::kWeightGradientBegin);
    if (state.head) run_deferred_wgrad(*state.head);
    for (size_t j = first; j < blocks.size(); ++j) run_deferred_wgrad(*state.blocks[j]);
    record_event(comm.events, StepEventKind::kWeightGradientEnd);
    if (!after_block) return;
    if (reported == blocks.size() + 1) after_block(reported = blocks.size());
    while (reported > input_done) after_block(--reported);
  };
  for (size_t i = blocks.size(); i-- > 0;) {
    auto* moe = dynamic_cast<MoeFfnBlock*>(blocks[i]);
    if (moe && comm.hierarchical) {
      grad = hierarchical_backward(*moe, grad, static_cast<MoeState&>(*state.blocks[i]),
                                   *comm.hierarchical, comm.stats);
      input_done = i;
      run_weights_from(i);
      continue;
    }
    if (!moe || !comm.backward) {
      grad = blocks[i]->backward_input(grad, *state.blocks[i]);
      input_done = i;
      continue;
    }
    comm::ExpertDispatcher& dispatcher = *comm.backward;
    auto& st = static_cast<MoeState&>(*state.blocks[i]);
    const auto& layout = std::any_cast<const comm::DispatchLayout&>(st.dispatch);
    // Combine's backward is a dispatch of the output gradients, dispatch's a combine.
    comm::PendingRows to_experts =
        dispatcher.start_to_experts(moe->unpermute_backward(grad, st), layout);
    int64_t a2a = all_to_all_started(comm.events);
    run_weights_from(i + 1);
    co_await until_done{to_experts.handle};
    all_to_all_done(comm.events, a2a);
    const Tensor drows = moe->experts_backward(received(to_experts, comm.stats), st);
    comm::PendingRows from_experts = dispatcher.start_from_experts(drows, layout);
    a2a = all_to_all_started(comm.events);
    run_weights_from(i);  // the experts' own weight gradients
    co_await until_done{from_experts.handle};
    all_to_all_done(comm.events, a2a);
    grad = moe->route_backward(grad, received(from_experts, comm.stats), st);
    input_done = i;
  }
  *dx = grad;
  run_weights_from(0);
}

}  // namespace tandem::parallel
