// The UCX backend: ucp tagged send/receive between every pair of ranks (CPU memory; CUDA memory
// where UCX has a CUDA transport), with collectives built from those messages. Worker addresses
// are exchanged through the rendezvous store, so it needs no MPI: it is the world communicator
// of torchrun- and slurm-started jobs, and the pipeline communicator on the CPU.
#pragma once

#include <functional>
#include <memory>

#include "comm/p2p_collectives.h"
#include "comm/store.h"

namespace tandem::comm {

class UcxCommunicator final : public P2PCommunicator {
 public:
  // Collective over `size` processes: publishes this worker's address under the store and
  // connects to every other rank's. rendezvous_timeout_ms bounds the wait for the peers'
  // addresses, the watchdog's timeout every operation after that.
  static std::unique_ptr<UcxCommunicator> world(std::shared_ptr<StoreClient> store,
                                                std::shared_ptr<Watchdog> watchdog, int rank,
                                                int size, int rendezvous_timeout_ms);
  // The same group as `bootstrap` (any backend), addresses exchanged by an all-gather on it;
  // operations are recorded by the bootstrap's watchdog.
  static std::unique_ptr<UcxCommunicator> over(Communicator& bootstrap);
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  struct Context;
  static std::unique_ptr<UcxCommunicator> connect(
      int rank, int size, const std::string& name, std::vector<int> world_ranks,
      const std::function<std::string(const std::string&)>& publish,
      std::shared_ptr<Watchdog> watchdog);
  UcxCommunicator(std::shared_ptr<Context> context, std::string name, int rank,
                  std::vector<int> world_ranks, uint16_t group_id,
                  std::shared_ptr<Watchdog> watchdog);
  std::unique_ptr<P2PRequest> post_send(const void* data, size_t bytes, int peer,
                                        uint64_t tag) override;
  std::unique_ptr<P2PRequest> post_recv(void* data, size_t bytes, int peer, uint64_t tag) override;
  std::function<void()> progress_engine() const override;
  std::shared_ptr<ActiveWorks> active_works() const override;
  std::shared_ptr<Context> context_;
  std::vector<int> peer_index_;  // by group rank: the context's endpoint (and status) index
};

}  // namespace tandem::comm
