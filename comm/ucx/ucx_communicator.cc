// UCX context, worker and endpoints; tagged messages as P2PRequests.
#include "comm/ucx/ucx_communicator.h"

#include <ucp/api/ucp.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "runtime/core/random.h"

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
  std::vector<ucp_ep_h> endpoints;  // by world rank; null for self
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

class UcxRequest final : public P2PRequest {
 public:
  UcxRequest(ucp_worker_h worker, ucs_status_ptr_t request, const char* what)
      : worker_(worker), request_(request), what_(what) {
    if (UCS_PTR_IS_ERR(request))
      TANDEM_FAIL("UCX ", what, " failed: ", ucs_status_string(UCS_PTR_STATUS(request)));
    if (!UCS_PTR_IS_PTR(request)) request_ = nullptr;  // completed immediately
  }
  ~UcxRequest() override {
    if (request_) {
      ucp_request_cancel(worker_, request_);
      while (ucp_request_check_status(request_) == UCS_INPROGRESS) ucp_worker_progress(worker_);
      ucp_request_free(request_);
    }
  }
  bool test() override {
    if (!request_) return true;
    ucp_worker_progress(worker_);
    const ucs_status_t status = ucp_request_check_status(request_);
    if (status == UCS_INPROGRESS) return false;
    ucp_request_free(request_);
    request_ = nullptr;
    if (status != UCS_OK) TANDEM_FAIL("UCX ", what_, " failed: ", ucs_status_string(status));
    return true;
  }

 private:
  ucp_worker_h worker_;
  void* request_;
  const char* what_;
};

}  // namespace

// Creates the worker, publishes its address (publish returns every rank's addresses, joined with
// length prefixes) and connects an endpoint to every other rank.
std::unique_ptr<UcxCommunicator> UcxCommunicator::connect(
    int rank, int size, const std::string& name, std::vector<int> world_ranks,
    const std::function<std::string(const std::string&)>& publish,
    std::shared_ptr<StoreClient> store, int timeout_ms) {
  auto context = std::make_shared<Context>();
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG;
  TANDEM_CHECK_UCX(ucp_init(&params, nullptr, &context->context));
  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  TANDEM_CHECK_UCX(ucp_worker_create(context->context, &worker_params, &context->worker));
  context->endpoints.assign(size, nullptr);
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
      ucp_ep_params_t ep_params{};
      ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
      ep_params.address = reinterpret_cast<const ucp_address_t*>(remote);
      TANDEM_CHECK_UCX(ucp_ep_create(context->worker, &ep_params, &context->endpoints[peer]));
    }
  }
  const int world_rank = world_ranks[rank];
  auto watchdog = std::make_shared<Watchdog>(std::move(store), world_rank, timeout_ms);
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
                                                        int rank, int size, int timeout_ms) {
  TANDEM_CHECK(size == 1 || store != nullptr, "UCX needs the rendezvous store to connect ", size,
               " ranks");
  std::vector<int> members(size);
  for (int r = 0; r < size; ++r) members[r] = r;
  auto publish = [&](const std::string& mine) {
    store->set("tandem/ucx/" + std::to_string(rank), mine);
    std::string all;
    for (int peer = 0; peer < size; ++peer) {
      const auto remote = store->get("tandem/ucx/" + std::to_string(peer), timeout_ms);
      TANDEM_USER_CHECK(remote.has_value(), "rank ", peer,
                        " did not publish its UCX address within ", timeout_ms,
                        " ms: is it running, with the same MASTER_ADDR/MASTER_PORT?");
      all += length_prefixed(*remote);
    }
    return all;
  };
  return connect(rank, size, "world", members, publish, store, timeout_ms);
}

std::unique_ptr<UcxCommunicator> UcxCommunicator::over(Communicator& bootstrap,
                                                       std::shared_ptr<StoreClient> store,
                                                       int timeout_ms) {
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
                 publish, std::move(store), timeout_ms);
}

UcxCommunicator::UcxCommunicator(std::shared_ptr<Context> context, std::string name, int rank,
                                 std::vector<int> world_ranks, uint16_t group_id,
                                 std::shared_ptr<Watchdog> watchdog)
    : P2PCommunicator(std::move(name), rank, std::move(world_ranks), group_id, std::move(watchdog)),
      context_(std::move(context)) {}

std::unique_ptr<P2PRequest> UcxCommunicator::post_send(const void* data, size_t bytes, int peer,
                                                       uint64_t tag) {
  ucp_request_param_t param{};
  return std::make_unique<UcxRequest>(
      context_->worker,
      ucp_tag_send_nbx(context_->endpoints[world_ranks()[peer]], data, bytes, tag, &param),
      "tagged send");
}

std::unique_ptr<P2PRequest> UcxCommunicator::post_recv(void* data, size_t bytes, int peer,
                                                       uint64_t tag) {
  (void)peer;  // the source rank is part of the tag
  ucp_request_param_t param{};
  return std::make_unique<UcxRequest>(
      context_->worker, ucp_tag_recv_nbx(context_->worker, data, bytes, tag, ~0ull, &param),
      "tagged receive");
}

std::unique_ptr<Communicator> UcxCommunicator::split(int color, int key) {
  const int n = size();
  Tensor mine = Tensor::empty({3}, DType::kI64), all = Tensor::empty({3 * n}, DType::kI64);
  mine.data<int64_t>()[0] = color;
  mine.data<int64_t>()[1] = key;
  mine.data<int64_t>()[2] = world_ranks()[rank()];
  all_gather(mine, all).wait();
  std::vector<std::tuple<int64_t, int, int>> members;  // (key, group rank, world rank)
  for (int p = 0; p < n; ++p) {
    const int64_t* v = all.data<int64_t>() + 3 * p;
    if (v[0] == color) members.emplace_back(v[1], p, static_cast<int>(v[2]));
  }
  std::sort(members.begin(), members.end());
  std::vector<int> world;
  int new_rank = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    if (std::get<1>(members[i]) == rank()) new_rank = static_cast<int>(i);
    world.push_back(std::get<2>(members[i]));
  }
  ++splits_;
  // Every member derives the same id from (parent, split number, color); 0 and 1 are reserved.
  const uint16_t id = static_cast<uint16_t>(
      2 + mix64((static_cast<uint64_t>(group_id()) << 40) ^ (static_cast<uint64_t>(splits_) << 20) ^
                static_cast<uint64_t>(static_cast<uint32_t>(color))) %
              65534);
  const std::string name =
      this->name() + "/split" + std::to_string(splits_) + "(" + std::to_string(color) + ")";
  return std::unique_ptr<Communicator>(
      new UcxCommunicator(context_, name, new_rank, world, id, watchdog()));
}

}  // namespace tandem::comm
