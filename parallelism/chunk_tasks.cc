// Expert parallelism's MoE exchanges (flat, with its FP8 payload, and hierarchical) and the chunk
// tasks that run the chunk's walk with them.
#include "parallelism/chunk_tasks.h"

#include <chrono>
#include <utility>

#include "kernels/fp8.h"

namespace tandem::parallel {

namespace {

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

const comm::DispatchLayout& flat_layout(const MoeState& st) {
  return std::any_cast<const comm::DispatchLayout&>(st.dispatch);
}

// One all-to-all after the other over a flat ExpertDispatcher, each started and awaited. With
// FP8 on, the dispatched rows travel as FP8 codes with their 1×128 scales (the quantisation the
// first expert GEMM would apply anyway, so the experts see the same numbers as on one rank).
class FlatMoeExchange final : public MoeExchange {
 public:
  FlatMoeExchange(comm::ExpertDispatcher& dispatcher, AllToAllStats* stats)
      : dispatcher_(dispatcher), stats_(stats) {}
  InFlight& start_plan(MoeFfnBlock& moe, MoeState& st) override;
  InFlight& start_dispatch(MoeFfnBlock& moe, MoeState& st) override;
  ExpertRows received_rows(MoeFfnBlock& moe, MoeState& st) override;
  InFlight& start_combine(MoeFfnBlock& moe, const Tensor& expert_out, MoeState& st) override;
  CombinedRows combined(MoeState& st) override;
  InFlight& start_combine_backward(MoeFfnBlock& moe, const Tensor& dy, MoeState& st) override;
  Tensor received_output_grads(MoeState& st) override;
  InFlight& start_dispatch_backward(MoeFfnBlock& moe, const Tensor& d_rows, MoeState& st) override;
  Tensor received_token_grads(MoeState& st) override;

 private:
  // A comm handle as the operation a phased task waits for; the time a runner sits blocked on
  // it is booked to its direction.
  struct HandleInFlight final : InFlight {
    comm::CommHandle* handle = nullptr;
    AllToAllStats* stats = nullptr;
    ExchangeDirection direction = ExchangeDirection::kDispatch;
    bool test() override { return handle->test(); }
    void wait() override { handle->wait(); }
    void add_exposed_seconds(double seconds) override {
      if (stats) (*stats)[direction].wait_seconds += seconds;
    }
  };
  // Records its start in the event log.
  InFlight& waiting_on(comm::CommHandle& handle, ExchangeDirection direction);
  void arrived();  // records that the walk saw it complete
  // The rows in flight, booked in the stats under `direction`.
  Tensor received(ExchangeDirection direction);

  comm::ExpertDispatcher& dispatcher_;
  AllToAllStats* stats_;
  comm::PendingPlan counts_;
  comm::DispatchLayout layout_;  // the forward's, until the combine hands it to the state
  comm::PendingRows rows_;
  HandleInFlight in_flight_;
  int64_t in_flight_id_ = 0;  // its number in the event log
};

// The hierarchical dispatcher's exchanges, which complete before they return: all of their time
// is booked as exposed, and the rows they sent across nodes as their bytes (the fan-out inside a
// node is not counted).
class HierarchicalMoeExchange final : public MoeExchange {
 public:
  HierarchicalMoeExchange(comm::HierarchicalDispatcher& dispatcher, AllToAllStats* stats)
      : dispatcher_(dispatcher), stats_(stats) {}
  InFlight& start_plan(MoeFfnBlock& moe, MoeState& st) override;
  InFlight& start_dispatch(MoeFfnBlock& moe, MoeState& st) override;
  ExpertRows received_rows(MoeFfnBlock& moe, MoeState& st) override;
  InFlight& start_combine(MoeFfnBlock& moe, const Tensor& expert_out, MoeState& st) override;
  CombinedRows combined(MoeState& st) override;
  InFlight& start_combine_backward(MoeFfnBlock& moe, const Tensor& dy, MoeState& st) override;
  Tensor received_output_grads(MoeState& st) override;
  InFlight& start_dispatch_backward(MoeFfnBlock& moe, const Tensor& d_rows, MoeState& st) override;
  Tensor received_token_grads(MoeState& st) override;

 private:
  // What the forward keeps for the backward (in MoeState::dispatch).
  struct Saved {
    comm::HierarchicalLayout layout;
    Tensor copy_out;  // expert outputs as they reached the forwarding rank
  };
  // Runs one exchange and books it; returns what it returned.
  template <class Exchange>
  Tensor booked(Exchange exchange, int64_t row_bytes, ExchangeDirection direction);

  comm::HierarchicalDispatcher& dispatcher_;
  AllToAllStats* stats_;
  Saved saved_;  // the forward's, until the combine hands it to the state
  Tensor rows_;  // the last exchange's result, until the walk takes it
  Completed done_;
};

InFlight& FlatMoeExchange::waiting_on(comm::CommHandle& handle, ExchangeDirection direction) {
  in_flight_.handle = &handle;
  in_flight_.stats = stats_;
  in_flight_.direction = direction;
  in_flight_id_ = all_to_all_started(events_);
  return in_flight_;
}

void FlatMoeExchange::arrived() {
  all_to_all_done(events_, in_flight_id_);
}

Tensor FlatMoeExchange::received(ExchangeDirection direction) {
  arrived();
  if (stats_) {
    (*stats_)[direction].bytes += rows_.bytes_to_peers;
    (*stats_)[direction].calls += 1;
  }
  return rows_.wait();
}

InFlight& FlatMoeExchange::start_plan(MoeFfnBlock&, MoeState& st) {
  counts_ = dispatcher_.start_plan(st.expert_ids);
  return waiting_on(counts_.handle, ExchangeDirection::kDispatch);
}

InFlight& FlatMoeExchange::start_dispatch(MoeFfnBlock& moe, MoeState& st) {
  arrived();  // the counts
  layout_ = dispatcher_.finish_plan(counts_);
  // Each token row goes once per routed expert; the dispatcher makes the copies as it sends.
  rows_ = dispatcher_.start_dispatch(dispatch_payload(st.normed, moe.fp8()), layout_);
  return waiting_on(rows_.handle, ExchangeDirection::kDispatch);
}

ExpertRows FlatMoeExchange::received_rows(MoeFfnBlock& moe, MoeState& st) {
  const Tensor rows =
      expert_input(received(ExchangeDirection::kDispatch), st.normed.dim(1), moe.fp8());
  return {rows, layout_.expert_offsets, dispatcher_.expert_output(rows.shape(), rows.dtype())};
}

InFlight& FlatMoeExchange::start_combine(MoeFfnBlock&, const Tensor& expert_out, MoeState& st) {
  rows_ = dispatcher_.start_combine(expert_out, st.gate_weights, layout_, /*keep_slot_rows=*/true);
  return waiting_on(rows_.handle, ExchangeDirection::kCombine);
}

CombinedRows FlatMoeExchange::combined(MoeState& st) {
  const Tensor routed = received(ExchangeDirection::kCombine);
  st.dispatch = std::move(layout_);  // the backward sends its rows back the same way
  return {routed, rows_.slot_rows};
}

// Combine's backward is a dispatch of the output gradients, dispatch's a combine.
InFlight& FlatMoeExchange::start_combine_backward(MoeFfnBlock& moe, const Tensor& dy,
                                                  MoeState& st) {
  rows_ = dispatcher_.start_to_experts(moe.unpermute_backward(dy, st), flat_layout(st));
  return waiting_on(rows_.handle, ExchangeDirection::kDispatch);
}

Tensor FlatMoeExchange::received_output_grads(MoeState&) {
  return received(ExchangeDirection::kDispatch);
}

InFlight& FlatMoeExchange::start_dispatch_backward(MoeFfnBlock&, const Tensor& d_rows,
                                                   MoeState& st) {
  rows_ = dispatcher_.start_from_experts(d_rows, flat_layout(st));
  return waiting_on(rows_.handle, ExchangeDirection::kCombine);
}

Tensor FlatMoeExchange::received_token_grads(MoeState& st) {
  const Tensor d_slots = received(ExchangeDirection::kCombine);
  Tensor d_normed =
      Tensor::empty({st.plan.n_tokens, d_slots.dim(1)}, d_slots.dtype(), d_slots.device());
  kernels::permute_rows_backward(d_slots, st.plan, d_normed);
  return d_normed;
}

template <class Exchange>
Tensor HierarchicalMoeExchange::booked(Exchange exchange, int64_t row_bytes,
                                       ExchangeDirection direction) {
  const auto start = std::chrono::steady_clock::now();
  Tensor result = exchange();
  if (stats_) {
    AllToAllStats::Direction& d = (*stats_)[direction];
    d.wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    d.bytes += dispatcher_.rows_sent_across_nodes() * row_bytes;
    d.calls += 1;
  }
  return result;
}

InFlight& HierarchicalMoeExchange::start_plan(MoeFfnBlock&, MoeState& st) {
  saved_ = Saved{dispatcher_.plan(st.expert_ids, st.gate_weights), Tensor()};
  return done_;
}

InFlight& HierarchicalMoeExchange::start_dispatch(MoeFfnBlock&, MoeState& st) {
  const int64_t row = static_cast<int64_t>(comm::row_bytes(st.normed));
  rows_ = booked([&] { return dispatcher_.dispatch(st.normed, saved_.layout); }, row,
                 ExchangeDirection::kDispatch);
  return done_;
}

ExpertRows HierarchicalMoeExchange::received_rows(MoeFfnBlock&, MoeState&) {
  return {std::exchange(rows_, Tensor()), saved_.layout.node.expert_offsets, Tensor()};
}

InFlight& HierarchicalMoeExchange::start_combine(MoeFfnBlock&, const Tensor& expert_out,
                                                 MoeState&) {
  rows_ = booked([&] { return dispatcher_.combine(expert_out, saved_.layout, &saved_.copy_out); },
                 0, ExchangeDirection::kCombine);
  return done_;
}

CombinedRows HierarchicalMoeExchange::combined(MoeState& st) {
  st.dispatch = std::move(saved_);
  return {std::exchange(rows_, Tensor()), Tensor()};
}

InFlight& HierarchicalMoeExchange::start_combine_backward(MoeFfnBlock&, const Tensor& dy,
                                                          MoeState& st) {
  const auto& saved = std::any_cast<const Saved&>(st.dispatch);
  Tensor d_gates;
  rows_ = booked(
      [&] { return dispatcher_.combine_backward(dy, saved.copy_out, saved.layout, d_gates); }, 0,
      ExchangeDirection::kDispatch);
  st.dgate_weights = d_gates;
  return done_;
}

Tensor HierarchicalMoeExchange::received_output_grads(MoeState&) {
  return std::exchange(rows_, Tensor());
}

InFlight& HierarchicalMoeExchange::start_dispatch_backward(MoeFfnBlock&, const Tensor& d_rows,
                                                           MoeState& st) {
  const auto& saved = std::any_cast<const Saved&>(st.dispatch);
  rows_ = booked([&] { return dispatcher_.dispatch_backward(d_rows, saved.layout); }, 0,
                 ExchangeDirection::kCombine);
  return done_;
}

Tensor HierarchicalMoeExchange::received_token_grads(MoeState&) {
  return std::exchange(rows_, Tensor());
}

}  // namespace

std::unique_ptr<MoeExchange> make_exchange(const ChunkComm& comm, ExchangeFor task) {
  std::unique_ptr<MoeExchange> exchange;
  comm::ExpertDispatcher* flat = task == ExchangeFor::kForward ? comm.forward : comm.backward;
  if (comm.hierarchical)
    exchange = std::make_unique<HierarchicalMoeExchange>(*comm.hierarchical, comm.stats);
  else if (flat)
    exchange = std::make_unique<FlatMoeExchange>(*flat, comm.stats);
  else
    exchange = std::make_unique<LocalMoeExchange>();
  exchange->set_event_log(comm.events);
  return exchange;
}

// The exchange lives in the task's frame, so it lasts as long as the chunk's walk it serves.
PhasedTask forward_task(ModelChunk& chunk, Tensor input, MicroBatchState& state,
                        const Tensor* targets, Pass pass, Tensor* output, ChunkComm comm) {
  const std::unique_ptr<MoeExchange> exchange = make_exchange(comm, ExchangeFor::kForward);
  co_await chunk.forward_task(std::move(input), state, targets, pass, output, *exchange);
}

PhasedTask backward_task(ModelChunk& chunk, Tensor dy, MicroBatchState& state, Tensor* dx,
                         ChunkComm comm, bool weights_in_gaps,
                         std::function<void(size_t block)> after_block) {
  const std::unique_ptr<MoeExchange> exchange = make_exchange(comm, ExchangeFor::kBackward);
  co_await chunk.backward_task(std::move(dy), state, dx, *exchange, weights_in_gaps,
                               std::move(after_block));
}

}  // namespace tandem::parallel
