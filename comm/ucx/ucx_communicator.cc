// UCX context, worker and endpoints; tagged messages as P2PRequests.
#include "comm/ucx/ucx_communicator.h"

#include <unistd.h>

#include <ucp/api/ucp.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "comm/faults.h"
#include "comm/ucx/ucx_signals.h"
#include "runtime/core/host_name.h"

#define TANDEM_CHECK_UCX(call)                                                \
  do {                                                                        \
    const ucs_status_t tandem_ucx_status_ = (call);                           \
    if (tandem_ucx_status_ != UCS_OK) [[unlikely]]                            \
      TANDEM_FAIL(#call, " failed: ", ucs_status_string(tandem_ucx_status_)); \
  } while (0)

namespace tandem::comm {

struct UcxCommunicator::Context {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::vector<ucp_ep_h> endpoints;  // by rank of the group the context connected; null for self
  std::vector<int> world_rank_of;   // the same ranks in the world, for messages
  // UCS_OK until UCX reports that peer's endpoint failed (its process died, its host went away).
  std::vector<ucs_status_t> peer_status;
  struct PeerRef {
    Context* context;
    int peer;
  };
  std::vector<PeerRef> peer_refs;  // stable addresses for the error handler's argument
  uint64_t next_group_id = 2;      // the world is group 1; see P2PCommunicator::agree_split
  std::shared_ptr<P2PCommunicator::ActiveWorks> active =
      std::make_shared<P2PCommunicator::ActiveWorks>();
  // The endpoint of a world rank (a group's members are world ranks).
  int endpoint_index(int world_rank) const;
  static void on_peer_failure(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* ref = static_cast<PeerRef*>(arg);
    if (ref->context->peer_status[ref->peer] == UCS_OK)
      ref->context->peer_status[ref->peer] = status;
  }
  ~Context() {
    std::vector<void*> closing;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;  // do not wait for peers that may be gone
    for (ucp_ep_h ep : endpoints) {
      if (!ep) continue;
      void* request = ucp_ep_close_nbx(ep, &param);
      if (UCS_PTR_IS_PTR(request)) closing.push_back(request);
    }
    for (void* request : closing) {
      while (ucp_request_check_status(request) == UCS_INPROGRESS) ucp_worker_progress(worker);
      ucp_request_free(request);
    }
    if (worker) ucp_worker_destroy(worker);
    if (context) ucp_cleanup(context);
  }
};

namespace {

// A posted message. A peer's failure completes its sends and matched receives with an error; a
// receive not yet matched belongs to the worker, not to the endpoint, so it is cancelled here once
// the peer's endpoint has failed.
class UcxRequest final : public P2PRequest {
 public:
  UcxRequest(ucp_worker_h worker, ucs_status_ptr_t request, bool receive, int peer_world_rank,
             const ucs_status_t* peer_status)
      : worker_(worker),
        request_(request),
        receive_(receive),
        peer_world_rank_(peer_world_rank),
        peer_status_(peer_status) {
    if (UCS_PTR_IS_ERR(request)) fail(UCS_PTR_STATUS(request));
    if (!UCS_PTR_IS_PTR(request)) request_ = nullptr;  // completed immediately
  }
  ~UcxRequest() override {
    if (!request_) return;
    if (receive_) {
      // A receive must not land in a buffer that is about to be freed: cancel and finish it.
      ucp_request_cancel(worker_, request_);
      while (ucp_request_check_status(request_) == UCS_INPROGRESS) ucp_worker_progress(worker_);
    }
    // A send cannot be cancelled; UCX releases it when it completes or its endpoint is closed.
    ucp_request_free(request_);
  }
  bool test() override {
    if (!request_) return true;
    ucs_status_t status = ucp_request_check_status(request_);
    if (status == UCS_INPROGRESS) {
      if (!receive_ || *peer_status_ == UCS_OK) return false;
      ucp_request_cancel(worker_, request_);
      while ((status = ucp_request_check_status(request_)) == UCS_INPROGRESS)
        ucp_worker_progress(worker_);
    }
    ucp_request_free(request_);
    request_ = nullptr;
    if (status != UCS_OK) fail(status);
    return true;
  }

 private:
  [[noreturn]] void fail(ucs_status_t status) const {
    const char* what = receive_ ? "receive from" : "send to";
    if (*peer_status_ != UCS_OK || status == UCS_ERR_ENDPOINT_TIMEOUT ||
        status == UCS_ERR_CONNECTION_RESET || status == UCS_ERR_UNREACHABLE ||
        status == UCS_ERR_CANCELED)
      throw PeerLost(describe_rank(peer_world_rank_) + " is gone: UCX " + what + " it failed (" +
                     ucs_status_string(status) +
                     (*peer_status_ != UCS_OK
                          ? std::string(", its connection: ") + ucs_status_string(*peer_status_)
                          : std::string()) +
                     "); its process died or its host is unreachable");
    if (status == UCS_ERR_MESSAGE_TRUNCATED)
      TANDEM_FAIL("UCX ", what, " rank ", peer_world_rank_,
                  ": a message larger than the receive posted for it (the ranks disagree about "
                  "the size of a tensor in the same operation)");
    TANDEM_FAIL("UCX ", what, " rank ", peer_world_rank_, " failed: ", ucs_status_string(status));
  }
  ucp_worker_h worker_;
  void* request_;
  bool receive_;
  int peer_world_rank_;
  const ucs_status_t* peer_status_;
};

}  // namespace

// Creates the worker, publishes its address (publish returns every rank's addresses, joined with
// length prefixes) and connects an endpoint to every other rank.
std::unique_ptr<UcxCommunicator> UcxCommunicator::connect(
    int rank, int size, const std::string& name, std::vector<int> world_ranks,
    const std::function<std::string(const std::string&)>& publish,
    std::shared_ptr<Watchdog> watchdog) {
  auto context = std::make_shared<Context>();
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG;
  ucp_config_t* config = nullptr;
  TANDEM_CHECK_UCX(ucp_config_read(nullptr, nullptr, &config));
  const ucs_status_t init = ucp_init(&params, config, &context->context);
  ucp_config_release(config);
  TANDEM_CHECK_UCX(init);
  return_signals_from_ucx();
  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  TANDEM_CHECK_UCX(ucp_worker_create(context->context, &worker_params, &context->worker));
  context->endpoints.assign(size, nullptr);
  context->world_rank_of = world_ranks;
  context->peer_status.assign(size, UCS_OK);
  context->peer_refs.resize(size);  // never resized again: the handlers point into it
  if (size > 1) {
    ucp_address_t* address = nullptr;
    size_t length = 0;
    TANDEM_CHECK_UCX(ucp_worker_get_address(context->worker, &address, &length));
    const std::string all = publish(std::string(reinterpret_cast<const char*>(address), length));
    ucp_worker_release_address(context->worker, address);
    size_t offset = 0;
    for (int peer = 0; peer < size; ++peer) {
      uint32_t n = 0;
      std::memcpy(&n, all.data() + offset, 4);
      const char* remote = all.data() + offset + 4;
      offset += 4 + n;
      if (peer == rank) continue;
      context->peer_refs[peer] = {context.get(), peer};
      ucp_ep_params_t ep_params{};
      ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                             UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
      ep_params.address = reinterpret_cast<const ucp_address_t*>(remote);
      // A peer's death becomes an error on its operations instead of an abort inside UCX.
      ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      ep_params.err_handler.cb = &Context::on_peer_failure;
      ep_params.err_handler.arg = &context->peer_refs[peer];
      TANDEM_CHECK_UCX(ucp_ep_create(context->worker, &ep_params, &context->endpoints[peer]));
    }
  }
  auto comm = std::unique_ptr<UcxCommunicator>(
      new UcxCommunicator(context, name, rank, std::move(world_ranks), 1, watchdog));
  comm->barrier().wait();  // every endpoint is wired before anyone returns
  return comm;
}

namespace {
std::string length_prefixed(const std::string& bytes) {
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  return std::string(reinterpret_cast<const char*>(&n), 4) + bytes;
}
}  // namespace

std::unique_ptr<UcxCommunicator> UcxCommunicator::world(std::shared_ptr<StoreClient> store,
                                                        std::shared_ptr<Watchdog> watchdog,
                                                        int rank, int size,
                                                        int rendezvous_timeout_ms) {
  TANDEM_CHECK(size == 1 || store != nullptr, "UCX needs the rendezvous store to connect ", size,
               " ranks");
  const int timeout_ms = rendezvous_timeout_ms;
  std::vector<int> members(size);
  for (int r = 0; r < size; ++r) members[r] = r;
  auto publish = [&](const std::string& mine) {
    // Each rank joins once per job and attempt: a second process claiming the same rank is
    // another job on this MASTER_PORT (or a launcher started twice), not this rank again.
    TANDEM_USER_CHECK(store->add("ucx/joined/" + std::to_string(rank), 1) == 1,
                      "another process already joined this job as rank ", rank, " (store at ",
                      store->where(), "): is MASTER_PORT used by another job? Give each job its ",
                      "own MASTER_PORT or TANDEM_RUN_ID");
    store->set("ucx/" + std::to_string(rank), mine);
    store->set("host/" + std::to_string(rank), host_name());
    std::string all;
    for (int peer = 0; peer < size; ++peer) {
      const auto remote = store->get("ucx/" + std::to_string(peer), timeout_ms);
      TANDEM_USER_CHECK(remote.has_value(), "rank ", peer,
                        " did not publish its UCX address within ", timeout_ms,
                        " ms (comm.rendezvous_timeout_s): is it running, with the same "
                        "MASTER_ADDR/MASTER_PORT?");
      all += length_prefixed(*remote);
    }
    std::vector<std::string> hosts(size);
    for (int peer = 0; peer < size; ++peer)
      hosts[peer] = store->get("host/" + std::to_string(peer), timeout_ms).value_or("?");
    runtime().hosts = std::move(hosts);
    return all;
  };
  return connect(rank, size, "world", members, publish, std::move(watchdog));
}

std::unique_ptr<UcxCommunicator> UcxCommunicator::over(Communicator& bootstrap) {
  TANDEM_CHECK(bootstrap.watchdog() != nullptr, "UCX over '", bootstrap.name(),
               "': the bootstrap group has no watchdog");
  const int size = bootstrap.size();
  auto publish = [&](const std::string& mine) {
    // Lengths first, then the addresses padded to the longest.
    Tensor length = Tensor::empty({1}, DType::kI64), max_length = length.clone();
    length.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
    max_length.copy_from(length);
    bootstrap.all_reduce(max_length, ReduceOp::kMax).wait();
    const int64_t width = max_length.data<int64_t>()[0] + 4;
    Tensor padded = Tensor::zeros({width}, DType::kU8),
           all = Tensor::empty({size * width}, DType::kU8);
    std::memcpy(padded.raw_data(), length_prefixed(mine).data(), mine.size() + 4);
    bootstrap.all_gather(padded, all).wait();
    std::string joined;
    for (int p = 0; p < size; ++p) {
      const char* entry = reinterpret_cast<const char*>(all.data<uint8_t>()) + p * width;
      uint32_t n = 0;
      std::memcpy(&n, entry, 4);
      joined.append(entry, 4 + n);
    }
    return joined;
  };
  return connect(bootstrap.rank(), size, bootstrap.name() + "/ucx", bootstrap.world_ranks(),
                 publish, bootstrap.watchdog());
}

UcxCommunicator::UcxCommunicator(std::shared_ptr<Context> context, std::string name, int rank,
                                 std::vector<int> world_ranks, uint16_t group_id,
                                 std::shared_ptr<Watchdog> watchdog)
    : P2PCommunicator(std::move(name), rank, std::move(world_ranks), group_id, std::move(watchdog)),
      context_(std::move(context)) {
  for (int member : this->world_ranks()) peer_index_.push_back(context_->endpoint_index(member));
}

int UcxCommunicator::Context::endpoint_index(int world_rank) const {
  const auto found = std::find(world_rank_of.begin(), world_rank_of.end(), world_rank);
  TANDEM_CHECK(found != world_rank_of.end(), "world rank ", world_rank,
               " is not connected by this UCX context");
  return static_cast<int>(found - world_rank_of.begin());
}

std::unique_ptr<P2PRequest> UcxCommunicator::post_send(const void* data, size_t bytes, int peer,
                                                       uint64_t tag) {
  const int index = peer_index_[peer];
  ucp_request_param_t param{};
  return std::make_unique<UcxRequest>(
      context_->worker, ucp_tag_send_nbx(context_->endpoints[index], data, bytes, tag, &param),
      false, world_ranks()[peer], &context_->peer_status[index]);
}

std::unique_ptr<P2PRequest> UcxCommunicator::post_recv(void* data, size_t bytes, int peer,
                                                       uint64_t tag) {
  // The source rank is part of the tag, so the worker's receive matches that peer only.
  const int index = peer_index_[peer];
  ucp_request_param_t param{};
  return std::make_unique<UcxRequest>(
      context_->worker, ucp_tag_recv_nbx(context_->worker, data, bytes, tag, ~0ull, &param), true,
      world_ranks()[peer], &context_->peer_status[index]);
}

std::function<void()> UcxCommunicator::progress_engine() const {
  return [context = context_] {
    // A few rounds while there is work, so a burst of completions is taken in one call.
    for (int round = 0; round < 8 && ucp_worker_progress(context->worker) != 0; ++round) {
    }
  };
}

std::shared_ptr<P2PCommunicator::ActiveWorks> UcxCommunicator::active_works() const {
  return context_->active;
}

std::unique_ptr<Communicator> UcxCommunicator::split(int color, int key) {
  SplitGroup group = agree_split(color, key, context_->next_group_id);
  auto comm = std::unique_ptr<UcxCommunicator>(
      new UcxCommunicator(context_, std::move(group.name), group.rank, std::move(group.world_ranks),
                          group.id, watchdog()));
  comm->set_node_collectives(group.node_collectives);
  return comm;
}

}  // namespace tandem::comm
