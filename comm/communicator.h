// The communication interface every parallel piece of tandem uses: collectives and point-to-point
// on Tensors, each returning a handle to wait on so that compute overlaps communication. Every
// operation is watched: a wait that passes the deadline stops with a message naming the
// operation, its sequence number, the group, the bytes and the ranks that never arrived.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "comm/faults.h"
#include "runtime/core/errors.h"
#include "runtime/core/tensor.h"

namespace tandem::comm {

enum class ReduceOp { kSum, kMax, kMin };

// Rows [row, row + rows) of a tensor, to or from one peer.
struct RowBlock {
  int peer;
  int64_t row;
  int64_t rows;
};

class Watchdog;

// A started operation.
class Work {
 public:
  virtual ~Work() = default;
  // true once complete; never blocks; throws the operation's failure (CommFault, Error)
  virtual bool test() = 0;
  virtual void wait() = 0;  // blocks until complete, or throws CommTimeout or the failure
  // "all_reduce #3 on group 'world' (4096 bytes)", for errors about the handle itself.
  virtual std::string describe() const = 0;
  // Its handle gives it up (an error is on its way): it must never be advanced again.
  virtual void abandon() {}
};

// Owns a started operation; whoever holds it must wait() (or test() until true) before dropping
// it. A failure reaches whoever waits: wait() and test() rethrow it, once, and the handle is then
// empty (the operation is abandoned, with its buffers kept, since a transport may still touch
// them). Assigning over an unfinished handle throws an Error naming its operation; destroying
// one is a fatal error that names it — never a silent wait that might swallow a failure. While
// an exception unwinds, a destroyed handle abandons its operation instead, so the error is
// reported at once rather than after a timeout per pending operation.
class CommHandle {
 public:
  CommHandle() = default;
  explicit CommHandle(std::unique_ptr<Work> work) : work_(std::move(work)) {}
  CommHandle(CommHandle&&) = default;
  CommHandle& operator=(CommHandle&& other);
  ~CommHandle();
  void wait();
  bool test();
  bool pending() const { return work_ != nullptr; }

 private:
  void abandon();
  std::unique_ptr<Work> work_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "world", "world/split(3)"...: how messages name this group.
  virtual const std::string& name() const = 0;
  // World ranks of this group's members, by group rank.
  virtual const std::vector<int>& world_ranks() const = 0;
  // The job's watchdog (flight recorder, store), shared by every group of the process; null for
  // a communicator that has none.
  virtual std::shared_ptr<Watchdog> watchdog() const { return nullptr; }
  // Where the tensors it moves must live: the host for MPI and UCX, the GPU for NCCL.
  virtual Device device() const { return Device::cpu(); }

  // In place over every rank's tensor. Reductions need fp32, fp64, int32 or int64.
  virtual CommHandle all_reduce(Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;
  // input [size·n, ...] → output [n, ...]: rank r gets the reduction of every rank's block r.
  virtual CommHandle reduce_scatter(const Tensor& input, Tensor& output,
                                    ReduceOp op = ReduceOp::kSum) = 0;
  // input [n, ...] → output [size·n, ...], blocks in rank order.
  virtual CommHandle all_gather(const Tensor& input, Tensor& output) = 0;
  virtual CommHandle broadcast(Tensor& tensor, int root) = 0;
  // Rows of the leading dimension: send_rows[p] consecutive rows of `send` go to rank p (in rank
  // order), recv_rows[p] rows arrive from rank p into `recv`. Any dtype; rows of send and recv
  // must have the same size.
  virtual CommHandle all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                                  Tensor& recv, const std::vector<int64_t>& recv_rows) = 0;
  // Scatter/gather exchange: each block of `send` goes to its peer and each block of `recv` is
  // filled from its peer; the k-th non-empty block sent to a peer lands in the k-th non-empty
  // block that peer lists for us. Layouts all_to_all_v cannot express (receiving straight into
  // expert-major order) then need no copy. Collective over the group.
  virtual CommHandle exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends,
                                   Tensor& recv, const std::vector<RowBlock>& recvs) = 0;
  virtual CommHandle send(const Tensor& tensor, int peer, int tag) = 0;
  virtual CommHandle recv(Tensor& tensor, int peer, int tag) = 0;
  virtual CommHandle barrier() = 0;
  // Ranks with the same color form a new group, ordered by key (then by rank). Collective.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // The same where a rank may stay out: with color < 0 it takes part and gets null, so disjoint
  // groups are made in one call. The members' colors must be below size(): by default the ranks
  // outside each form a group of one (color size() + rank), which is then dropped.
  virtual std::unique_ptr<Communicator> split_some(int color, int key);
};

// Bytes per row of the leading dimension (0 for an empty tensor).
size_t row_bytes(const Tensor& tensor);
// Validates an all_to_all_v request (one count per rank, totals matching the tensors, equal row
// sizes) and returns the bytes per row; shared by the backends.
size_t check_all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                          const Tensor& recv, const std::vector<int64_t>& recv_rows,
                          int group_size);
// One byte to and from every rank of the group, waited for. NCCL connects a pair of ranks on
// their first point-to-point operation, blocking the host until both reach it; groups whose
// operations ranks issue in orders that differ (the two expert groups under F&B interleaving, the
// pipeline channels) connect first, in one order on every rank. Collective.
void connect_peers(Communicator& group);
// One number reduced over the group, in fp64 (losses, norms, timings); blocks until done.
double all_reduce_value(Communicator& group, double value, ReduceOp op = ReduceOp::kSum);

// Every rank's bytes, in rank order, on `root` (empty elsewhere): traces, parameter dumps and
// timings of different lengths per rank. Collective over the group.
std::vector<std::string> gather_strings(Communicator& group, const std::string& mine, int root);

// out = a (op) b over n elements of a reducible dtype (fp32, fp64, int32, int64); out may be a.
// The one elementwise reduction of the collectives that reduce on the CPU themselves.
void reduce_elements(DType dtype, void* out, const void* a, const void* b, int64_t n, ReduceOp op);

// Validates an exchange_rows request; shared by the backends.
void check_row_blocks(const Tensor& send, const std::vector<RowBlock>& sends, const Tensor& recv,
                      const std::vector<RowBlock>& recvs, int group_size);

}  // namespace tandem::comm
