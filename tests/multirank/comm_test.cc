// Multi-rank tests of the communication layer, run as real processes under mpirun (1, 2, 3, 4 and
// 8 ranks in CI). Every result is checked against what this rank can compute from all ranks'
// known inputs. `comm_test --skip-collective` instead makes one rank skip a collective, to show
// the watchdog's report.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "comm/expert_dispatch.h"
#include "comm/hierarchical_dispatch.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/p2p_collectives.h"
#include "comm/topology.h"
#include "comm/traffic.h"
#include "comm/ucx/ucx_communicator.h"
#include "comm/world.h"
#include "kernels/elementwise.h"
#include "kernels/fp8.h"
#include "kernels/router.h"
#include "parallelism/chunk_tasks.h"
#include "runtime/core/random.h"
#include "runtime/model/moe_block.h"

namespace tandem::comm {
namespace {

Communicator* world = nullptr;  // set by main for the tests below
World* joined = nullptr;
// The UCX backend over the same ranks: the world itself when it is UCX, else made over MPI.
P2PCommunicator* ucx = nullptr;

const DType kAllDTypes[] = {DType::kF32,    DType::kF64, DType::kBF16, DType::kF8E4M3,
                            DType::kF8E5M2, DType::kI32, DType::kI64,  DType::kU8};

// A byte pattern that names (source rank, destination, byte index).
uint8_t pattern(int src, int dst, int64_t i) {
  return static_cast<uint8_t>(src * 37 + dst * 11 + i * 7);
}

void fill_pattern(Tensor& t, int src, int dst) {
  auto* bytes = static_cast<uint8_t*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = pattern(src, dst, i);
}

template <class T>
void check_all_reduce(DType dtype) {
  const int r = world->rank(), n = world->size();
  Tensor t = Tensor::empty({13}, dtype);
  for (int64_t i = 0; i < 13; ++i) t.data<T>()[i] = static_cast<T>((r + 1) * (i % 7 + 1));
  Tensor mx = t.clone();
  world->all_reduce(t, ReduceOp::kSum).wait();
  world->all_reduce(mx, ReduceOp::kMax).wait();
  for (int64_t i = 0; i < 13; ++i) {
    EXPECT_EQ(t.data<T>()[i], static_cast<T>(n * (n + 1) / 2 * (i % 7 + 1)));
    EXPECT_EQ(mx.data<T>()[i], static_cast<T>(n * (i % 7 + 1)));
  }
}

TEST(Collectives, AllReduceEveryReducibleDtype) {
  check_all_reduce<float>(DType::kF32);
  check_all_reduce<double>(DType::kF64);
  check_all_reduce<int32_t>(DType::kI32);
  check_all_reduce<int64_t>(DType::kI64);
  Tensor b = Tensor::zeros({4}, DType::kBF16);
  EXPECT_THROW(world->all_reduce(b), Error);
}

TEST(Collectives, ReduceScatter) {
  const int r = world->rank(), n = world->size();
  Tensor in = Tensor::empty({n * 3}, DType::kF64), out = Tensor::empty({3}, DType::kF64);
  for (int64_t i = 0; i < n * 3; ++i) in.data<double>()[i] = r * 100 + i;
  world->reduce_scatter(in, out).wait();
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_EQ(out.data<double>()[i], 100.0 * n * (n - 1) / 2 + n * (r * 3 + i));
}

TEST(Collectives, AllGatherAndBroadcastEveryDtype) {
  const int r = world->rank(), n = world->size();
  for (DType dtype : kAllDTypes)
    for (int64_t rows : {0, 3}) {
      Tensor in = Tensor::empty({rows, 5}, dtype), out = Tensor::empty({n * rows, 5}, dtype);
      fill_pattern(in, r, 0);
      world->all_gather(in, out).wait();
      const auto* bytes = static_cast<const uint8_t*>(out.raw_data());
      for (int src = 0; src < n; ++src)
        for (size_t i = 0; i < in.nbytes(); ++i)
          ASSERT_EQ(bytes[src * in.nbytes() + i], pattern(src, 0, i)) << dtype_name(dtype);
      for (int root = 0; root < n; ++root) {
        Tensor t = Tensor::empty({rows, 5}, dtype);
        fill_pattern(t, r, 1);
        world->broadcast(t, root).wait();
        for (size_t i = 0; i < t.nbytes(); ++i)
          ASSERT_EQ(static_cast<const uint8_t*>(t.raw_data())[i], pattern(root, 1, i));
      }
    }
}

TEST(Collectives, AllToAllVUnevenAndEmptyEveryDtype) {
  const int r = world->rank(), n = world->size();
  auto rows = [](int src, int dst) { return static_cast<int64_t>((src + 2 * dst) % 3); };  // 0..2
  for (DType dtype : kAllDTypes) {
    std::vector<int64_t> send_rows(n), recv_rows(n);
    int64_t send_total = 0, recv_total = 0;
    for (int p = 0; p < n; ++p) {
      send_total += send_rows[p] = rows(r, p);
      recv_total += recv_rows[p] = rows(p, r);
    }
    Tensor send = Tensor::empty({send_total, 4}, dtype),
           recv = Tensor::empty({recv_total, 4}, dtype);
    const size_t row = 4 * dtype_size(dtype);
    int64_t offset = 0;
    for (int p = 0; p < n; ++p) {
      Tensor block = send.rows(offset, offset + send_rows[p]);
      fill_pattern(block, r, p);
      offset += send_rows[p];
    }
    world->all_to_all_v(send, send_rows, recv, recv_rows).wait();
    offset = 0;
    for (int p = 0; p < n; ++p) {
      const auto* bytes = static_cast<const uint8_t*>(recv.raw_data()) + offset * row;
      for (size_t i = 0; i < recv_rows[p] * row; ++i)
        ASSERT_EQ(bytes[i], pattern(p, r, i)) << dtype_name(dtype) << " from " << p;
      offset += recv_rows[p];
    }
  }
  // Nothing at all to send.
  Tensor none = Tensor::empty({0, 4}, DType::kF32), none2 = none.clone();
  const std::vector<int64_t> zeros(n, 0);
  world->all_to_all_v(none, zeros, none2, zeros).wait();
}

TEST(Collectives, SendRecvRingBarrierAndSplit) {
  const int r = world->rank(), n = world->size();
  if (n > 1) {
    Tensor out = Tensor::empty({6}, DType::kI64), in = Tensor::empty({6}, DType::kI64);
    for (int i = 0; i < 6; ++i) out.data<int64_t>()[i] = r * 10 + i;
    CommHandle receive = world->recv(in, (r + n - 1) % n, 7);  // posted before the send
    CommHandle send = world->send(out, (r + 1) % n, 7);
    receive.wait();
    send.wait();
    for (int i = 0; i < 6; ++i) EXPECT_EQ(in.data<int64_t>()[i], ((r + n - 1) % n) * 10 + i);
  }
  world->barrier().wait();
  auto half = world->split(r % 2, -r);  // key -r: reversed order inside each group
  EXPECT_EQ(half->size(), (n + 1 - r % 2) / 2);
  EXPECT_EQ(half->world_ranks()[half->rank()], r);
  EXPECT_GE(half->world_ranks().front(), half->world_ranks().back());
  Tensor t = Tensor::empty({1}, DType::kI64);
  t.data<int64_t>()[0] = r;
  half->all_reduce(t).wait();
  int64_t expected = 0;
  for (int q = r % 2; q < n; q += 2) expected += q;
  EXPECT_EQ(t.data<int64_t>()[0], expected);
}

// 64 bits summarising a tensor's bytes, to compare results across ranks.
int64_t digest(const Tensor& t) {
  uint64_t h = 1469598103934665603ull;
  const auto* bytes = static_cast<const uint8_t*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  return static_cast<int64_t>(h);
}

// True when every rank of `group` holds the same digest.
bool same_on_every_rank(Communicator& group, const Tensor& t) {
  Tensor mine = Tensor::empty({1}, DType::kI64), all = Tensor::empty({group.size()}, DType::kI64);
  mine.data<int64_t>()[0] = digest(t);
  group.all_gather(mine, all).wait();
  for (int p = 0; p < group.size(); ++p)
    if (all.data<int64_t>()[p] != mine.data<int64_t>()[0]) return false;
  return true;
}

// Rank r's contribution to element i: random, so that the order of the sums shows in the bits.
double contribution(int r, int64_t i) {
  return static_cast<double>(random_bits(77, r, i) % 2000001) / 1000.0 - 1000.0;
}

// The UCX backend's two ways for large collectives, each on a group of all ranks: the ring of
// messages, and (on one node) the node's shared memory. Messages sent per rank are counted.
struct UcxGroups {
  std::unique_ptr<Communicator> ring, node;
  UcxGroups() {
    const bool before = ucx->node_collectives();
    ucx->set_node_collectives(false);
    ring = ucx->split(0, ucx->rank());
    ucx->set_node_collectives(true);
    node = ucx->split(0, ucx->rank());
    ucx->set_node_collectives(before);
    // The first large collective opens the shared memory (a few small messages), not counted.
    Tensor first = Tensor::zeros({P2PCommunicator::kRingMinBytes / 4}, DType::kF32);
    node->all_reduce(first).wait();
  }
  std::vector<std::pair<const char*, P2PCommunicator*>> both() const {
    return {{"ring", static_cast<P2PCommunicator*>(ring.get())},
            {"shared memory", static_cast<P2PCommunicator*>(node.get())}};
  }
};

// All-reduce on sizes around the small-message threshold and past several ring chunks, on uneven
// blocks: exact (integers), identical bits on every rank (random floats), and for the ring at
// most 2(N-1)/N of the buffer sent per rank; the shared-memory way sends no message at all.
TEST(UcxCollectives, AllReduceIsCorrectIdenticalEverywhereAndSendsTheRingsBytes) {
  UcxGroups groups;
  for (auto [way, group] : groups.both()) {
    const int r = group->rank(), n = group->size();
    for (int64_t numel : {int64_t{5}, int64_t{4099}, int64_t{100003}, int64_t{(1 << 20) + 7}}) {
      SCOPED_TRACE(std::string(way) + ", " + std::to_string(numel) + " elements");
      Tensor exact = Tensor::empty({numel}, DType::kI64);
      for (int64_t i = 0; i < numel; ++i) exact.data<int64_t>()[i] = (r + 1) * (i % 1009);
      const uint64_t before = group->bytes_sent();
      group->all_reduce(exact).wait();
      const uint64_t sent = group->bytes_sent() - before;
      for (int64_t i = 0; i < numel; ++i)
        ASSERT_EQ(exact.data<int64_t>()[i], int64_t{n} * (n + 1) / 2 * (i % 1009));
      const double bytes = static_cast<double>(exact.nbytes());
      if (bytes >= P2PCommunicator::kRingMinBytes) {
        if (group == groups.both()[0].second) {
          EXPECT_LE(sent, 2.0 * (n - 1) * ((numel + n - 1) / n) * 8) << sent / bytes << " x";
          EXPECT_LE(sent, 2.0 * (n - 1) / n * bytes + 2.0 * (n - 1) * 8);
          if (n > 1) {
            EXPECT_GT(sent, 0u);
          }
        } else {
          EXPECT_EQ(sent, 0u) << "the shared-memory way sent messages";
        }
      }
      Tensor noisy = Tensor::empty({numel}, DType::kF32);
      for (int64_t i = 0; i < numel; ++i)
        noisy.data<float>()[i] = static_cast<float>(contribution(r, i));
      group->all_reduce(noisy).wait();
      EXPECT_TRUE(same_on_every_rank(*group, noisy));
      for (int64_t i = 0; i < numel; i += 97) {
        double expected = 0;
        for (int q = 0; q < n; ++q) expected += static_cast<float>(contribution(q, i));
        ASSERT_NEAR(noisy.data<float>()[i], expected, 1e-3) << i;
      }
      Tensor biggest = Tensor::empty({numel}, DType::kF64);
      for (int64_t i = 0; i < numel; ++i) biggest.data<double>()[i] = contribution(r, i);
      group->all_reduce(biggest, ReduceOp::kMax).wait();
      for (int64_t i = 0; i < numel; i += 101) {
        double expected = contribution(0, i);
        for (int q = 1; q < n; ++q) expected = std::max(expected, contribution(q, i));
        ASSERT_EQ(biggest.data<double>()[i], expected);
      }
    }
  }
}

TEST(UcxCollectives, ReduceScatterAndAllGather) {
  UcxGroups groups;
  for (auto [way, group] : groups.both()) {
    const int r = group->rank(), n = group->size();
    const bool ring = group == groups.both()[0].second;
    for (int64_t per_rank : {int64_t{3}, int64_t{70001}}) {
      SCOPED_TRACE(std::string(way) + ", " + std::to_string(per_rank) + " per rank");
      const bool large = n * per_rank * 8 >= int64_t{P2PCommunicator::kRingMinBytes};
      const uint64_t expected_bytes = ring || !large ? (n - 1) * per_rank * 8 : 0;
      Tensor in = Tensor::empty({n * per_rank}, DType::kF64);
      Tensor out = Tensor::empty({per_rank}, DType::kF64);
      for (int64_t i = 0; i < n * per_rank; ++i) in.data<double>()[i] = r * 100.0 + i;
      uint64_t before = group->bytes_sent();
      group->reduce_scatter(in, out).wait();
      EXPECT_EQ(group->bytes_sent() - before, expected_bytes);
      for (int64_t i = 0; i < per_rank; ++i)
        ASSERT_EQ(out.data<double>()[i], 100.0 * n * (n - 1) / 2 + n * double(r * per_rank + i));
      Tensor all = Tensor::empty({n * per_rank}, DType::kF64);
      before = group->bytes_sent();
      group->all_gather(out, all).wait();
      EXPECT_EQ(group->bytes_sent() - before, expected_bytes);
      for (int64_t i = 0; i < n * per_rank; ++i)
        ASSERT_EQ(all.data<double>()[i], 100.0 * n * (n - 1) / 2 + n * double(i));
    }
  }
}

// Several large collectives in flight at once, on one group and across two groups with the same
// members (as gradient buckets and the expert groups are), waited in a different order on
// different ranks: each completes with its own result, both ways.
TEST(UcxCollectives, ManyInFlightCompleteWhateverOrderEachRankWaitsIn) {
  UcxGroups groups;
  auto other = groups.both()[1].second->split(0, groups.both()[1].second->rank());
  for (auto [way, group] : groups.both()) {
    SCOPED_TRACE(way);
    const int n = group->size(), r = group->rank();
    std::vector<Tensor> tensors;
    std::vector<CommHandle> handles;
    for (int k = 0; k < 6; ++k) {
      tensors.push_back(Tensor::empty({30000 + 1000 * k}, DType::kI64));
      for (int64_t i = 0; i < tensors.back().numel(); ++i)
        tensors.back().data<int64_t>()[i] = k + 1;
      Communicator& on = k % 2 == 0 ? *group : *other;
      handles.push_back(on.all_reduce(tensors.back()));
    }
    for (int j = 0; j < 6; ++j) handles[r % 2 == 0 ? j : 5 - j].wait();
    for (int k = 0; k < 6; ++k) EXPECT_EQ(tensors[k].data<int64_t>()[29999], (k + 1) * n);
  }
}

// Two groups with the same members (as the expert and expert-backward groups are) get different
// ids by agreement, and their interleaved collectives and sends never meet.
TEST(UcxGroups, IdenticalMembersGetDistinctIdsAndNeverCrossMessages) {
  const int r = ucx->rank(), n = ucx->size();
  auto a = ucx->split(0, r), b = ucx->split(0, r);
  auto* pa = dynamic_cast<P2PCommunicator*>(a.get());
  auto* pb = dynamic_cast<P2PCommunicator*>(b.get());
  ASSERT_TRUE(pa && pb);
  EXPECT_NE(pa->group_id(), pb->group_id());
  EXPECT_NE(pa->group_id(), ucx->group_id());
  const int64_t numel = 50000;
  Tensor x = Tensor::empty({numel}, DType::kI64), y = x.clone();
  for (int64_t i = 0; i < numel; ++i) x.data<int64_t>()[i] = 1, y.data<int64_t>()[i] = 1000;
  std::vector<int64_t> rows(n, 2);
  Tensor send_a = Tensor::empty({2 * n, 3}, DType::kI32), recv_a = send_a.clone();
  Tensor send_b = send_a.clone(), recv_b = send_a.clone();
  for (int64_t i = 0; i < send_a.numel(); ++i)
    send_a.data<int32_t>()[i] = r, send_b.data<int32_t>()[i] = 100 + r;
  // Started a, b, a, b; waited in the other order.
  CommHandle ha = a->all_reduce(x), hb = b->all_reduce(y);
  CommHandle ta = a->all_to_all_v(send_a, rows, recv_a, rows);
  CommHandle tb = b->all_to_all_v(send_b, rows, recv_b, rows);
  tb.wait();
  ta.wait();
  hb.wait();
  ha.wait();
  EXPECT_EQ(x.data<int64_t>()[numel - 1], n);
  EXPECT_EQ(y.data<int64_t>()[numel - 1], 1000 * n);
  for (int p = 0; p < n; ++p) {
    EXPECT_EQ(recv_a.data<int32_t>()[p * 6], p);
    EXPECT_EQ(recv_b.data<int32_t>()[p * 6], 100 + p);
  }
  if (n > 1) {  // the same user tag on both groups
    Tensor in_a = Tensor::empty({4}, DType::kI64), in_b = in_a.clone();
    Tensor out_a = Tensor::empty({4}, DType::kI64), out_b = out_a.clone();
    for (int i = 0; i < 4; ++i) out_a.data<int64_t>()[i] = 1, out_b.data<int64_t>()[i] = 2;
    CommHandle rb = b->recv(in_b, (r + n - 1) % n, 9), ra = a->recv(in_a, (r + n - 1) % n, 9);
    CommHandle sa = a->send(out_a, (r + 1) % n, 9), sb = b->send(out_b, (r + 1) % n, 9);
    ra.wait();
    rb.wait();
    sa.wait();
    sb.wait();
    EXPECT_EQ(in_a.data<int64_t>()[0], 1);
    EXPECT_EQ(in_b.data<int64_t>()[0], 2);
  }
}

// The flight recorder keeps operations in process memory: a thousand collectives cost the store
// nothing beyond the heartbeat's one request per second.
TEST(Watchdog, CollectivesCauseNoStoreRequests) {
  for (Communicator* group : {world, static_cast<Communicator*>(ucx)}) {
    auto watchdog = group->watchdog();
    ASSERT_TRUE(watchdog != nullptr);
    if (!watchdog->store()) continue;  // a single process has no store
    const uint64_t before = watchdog->store()->requests();
    const auto start = std::chrono::steady_clock::now();
    Tensor t = Tensor::zeros({16}, DType::kF32);
    for (int i = 0; i < 1000; ++i) group->all_reduce(t).wait();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const uint64_t requests = watchdog->store()->requests() - before;
    EXPECT_LE(requests, seconds / 1.0 + 2) << requests << " store requests for 1000 all_reduces in "
                                           << seconds << " s on " << group->name();
  }
}

TEST(Traffic, EachClassOpensItsBackendAndCarriesMessages) {
  const int r = world->rank(), n = world->size();
  CommConfig config;  // auto: MPI under mpirun, else UCX
  BackendWorlds backends(*joined, config);
  Communicator& pipeline = backends.for_traffic(Traffic::kPipeline, DeviceType::kCPU);
  Communicator& data = backends.for_traffic(Traffic::kData, DeviceType::kCPU);
  EXPECT_EQ(pipeline.size(), n);
  EXPECT_EQ(pipeline.world_ranks(), world->world_ranks());
  if (n > 1) {  // a pipeline ring over the pipeline backend
    Tensor out = Tensor::empty({1000}, DType::kF32), in = out.clone();
    for (int i = 0; i < 1000; ++i) out.data<float>()[i] = float(r * 1000 + i);
    CommHandle receive = pipeline.recv(in, (r + n - 1) % n, 3);
    pipeline.send(out, (r + 1) % n, 3).wait();
    receive.wait();
    EXPECT_EQ(in.data<float>()[999], float(((r + n - 1) % n) * 1000 + 999));
  }
  Tensor t = Tensor::empty({1}, DType::kI64);
  t.data<int64_t>()[0] = 1;
  data.all_reduce(t).wait();
  EXPECT_EQ(t.data<int64_t>()[0], n);
}

TEST(Topology, OneHostAndSimulatedNodes) {
  const int n = world->size();
  Topology real = discover_topology(*world);
  EXPECT_EQ(real.nodes, 1);
  EXPECT_EQ(real.local_size, n);
  EXPECT_EQ(real.local_rank, world->rank());
  if (n % 2 == 0) {
    Topology two = discover_topology(*world, n / 2);
    EXPECT_EQ(two.nodes, 2);
    EXPECT_EQ(two.node, world->rank() / (n / 2));
    auto node = node_group(*world, two), rail = rail_group(*world, two);
    EXPECT_EQ(node->size(), n / 2);
    EXPECT_EQ(rail->size(), 2);
  }
}

// Random routing of `tokens` tokens to top-2 of `experts` distinct experts.
Tensor random_routes(int64_t tokens, int64_t experts, uint64_t seed) {
  Tensor ids = Tensor::empty({tokens, 2}, DType::kI32);
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t a = static_cast<int32_t>(random_bits(seed, 1, t) % experts);
    const int32_t b =
        static_cast<int32_t>((a + 1 + random_bits(seed, 2, t) % (experts - 1)) % experts);
    ids.data<int32_t>()[2 * t] = a;
    ids.data<int32_t>()[2 * t + 1] = b;
  }
  return ids;
}

// Each rank's shared memory: allocations are reused once freed (neighbours coalesced), a tensor
// too big for the first segment gets a new one, and every peer reads what a rank wrote, in place.
TEST(SharedMemory, PeersReadEachOthersTensorsInPlace) {
  const int r = world->rank(), n = world->size();
  std::string why_not;
  auto shared = NodeSharedMemory::open(*world, &why_not);
  ASSERT_TRUE(shared != nullptr) << why_not;
  const void* first_address;
  {
    Tensor a = shared->empty({1000}, DType::kF32), b = shared->empty({3000}, DType::kF32);
    first_address = a.raw_data();
    EXPECT_EQ(static_cast<const char*>(b.raw_data()) - static_cast<const char*>(a.raw_data()),
              4096);  // 4000 bytes rounded up to the 256-byte alignment
  }
  Tensor both = shared->empty({4000}, DType::kF32);  // fits only where a and b were, together
  EXPECT_EQ(both.raw_data(), first_address);
  EXPECT_FALSE(shared->find(&r).has_value());
  const size_t before = shared->segment_bytes_total();
  const int64_t big = (int64_t{80} << 20) + 4 * r;  // past the first segment: a second one
  Tensor large = shared->empty({big}, DType::kU8);
  EXPECT_GT(shared->segment_bytes_total(), before);
  large.data<uint8_t>()[0] = static_cast<uint8_t>(r + 1);
  large.data<uint8_t>()[big - 1] = static_cast<uint8_t>(r + 101);
  for (int64_t i = 0; i < both.numel(); ++i) both.data<float>()[i] = 1000.0f * r + i;
  // Everyone's places of both tensors, then every rank reads every other rank's values.
  Tensor mine = Tensor::empty({2, 3}, DType::kI64), all = Tensor::empty({2 * n, 3}, DType::kI64);
  for (int t = 0; t < 2; ++t) {
    const auto ref = shared->find(t == 0 ? both.raw_data() : large.raw_data());
    ASSERT_TRUE(ref.has_value());
    mine.data<int64_t>()[3 * t] = ref->fd;
    mine.data<int64_t>()[3 * t + 1] = ref->segment_bytes;
    mine.data<int64_t>()[3 * t + 2] = ref->offset;
  }
  world->all_gather(mine, all).wait();
  const int64_t* place = all.data<int64_t>();
  for (int p = 0; p < n; ++p) {
    const float* values = reinterpret_cast<const float*>(
        shared->address(p, {place[6 * p], place[6 * p + 1], place[6 * p + 2]}));
    for (int64_t i = 0; i < 4000; ++i) ASSERT_EQ(values[i], 1000.0f * p + i) << "rank " << p;
    const auto* bytes = reinterpret_cast<const uint8_t*>(
        shared->address(p, {place[6 * p + 3], place[6 * p + 4], place[6 * p + 5]}));
    EXPECT_EQ(bytes[0], p + 1);
    EXPECT_EQ(bytes[(int64_t{80} << 20) + 4 * p - 1], p + 101);
  }
  world->barrier().wait();  // nobody frees (or reuses) its memory while another still reads it
}

// Exchanges in shared memory are numbered in the order their collectives start, and peers signal
// by number, so one must finish before the next starts; starting a second one early is refused
// rather than left to deadlock or to mix up signals.
TEST(SharedMemory, OverlappingExchangesOnOneGroupAreRefused) {
  const int r = world->rank(), n = world->size();
  std::string why_not;
  auto shared = NodeSharedMemory::open(*world, &why_not);
  ASSERT_TRUE(shared != nullptr) << why_not;
  ExpertDispatcher dispatcher(*world, 2 * n, shared);
  Tensor x = Tensor::zeros({4, 8}, DType::kF32);
  const DispatchLayout layout = dispatcher.plan(random_routes(4, 2 * n, 3 + r));
  PendingRows first = dispatcher.start_dispatch(x, layout);
  EXPECT_THROW(dispatcher.start_dispatch(x, layout), Error);
  first.wait();
  EXPECT_NO_THROW(dispatcher.start_dispatch(x, layout).wait());
}

// A rank that never does its part of a shared-memory exchange (writing its rows, then saying so)
// is named once the deadline passes, instead of leaving the others waiting forever.
TEST(SharedMemory, AStalledPeerIsNamedAfterTheDeadline) {
  const int r = world->rank(), n = world->size();
  if (n < 2) GTEST_SKIP() << "needs a peer";
  std::string why_not;
  auto shared = NodeSharedMemory::open(*world, &why_not, /*timeout_ms=*/1500);
  ASSERT_TRUE(shared != nullptr) << why_not;
  ExpertDispatcher dispatcher(*world, 2 * n, shared);
  Tensor x = Tensor::zeros({4, 8}, DType::kF32);
  const DispatchLayout layout = dispatcher.plan(random_routes(4, 2 * n, 5 + r));
  PendingRows pending = dispatcher.start_dispatch(x, layout);
  if (r == 1) {  // stalls: writes nothing until the others have given up, then completes
    world->barrier().wait();
    pending.wait();
    return;
  }
  try {
    pending.wait();
    ADD_FAILURE() << "rank 1 never wrote its rows, yet the exchange completed";
  } catch (const CommTimeout& timeout) {
    const std::string what = timeout.what();
    EXPECT_NE(what.find("rank(s) 1 of the group never finished"), std::string::npos) << what;
    EXPECT_NE(what.find("expert exchange #1 in shared memory"), std::string::npos) << what;
  }
  world->barrier().wait();
  pending.wait();  // rank 1 has done its part by now
}

// The dispatch tests run twice: rows as messages, and rows written and read in the node's shared
// memory (every rank of these tests is on one node; for the hierarchical dispatch, the fan-out
// inside each simulated node).
class ExpertDispatchModes : public ::testing::TestWithParam<std::string> {
 protected:
  ExpertDispatcher make_dispatcher(int64_t experts) {
    if (GetParam() == "messages") return ExpertDispatcher(*world, experts);
    static std::shared_ptr<NodeSharedMemory> shared;  // one per process, opened collectively
    if (!shared) {
      std::string why_not;
      shared = NodeSharedMemory::open(*world, &why_not);
      EXPECT_TRUE(shared != nullptr) << why_not;
    }
    return ExpertDispatcher(*world, experts, shared);
  }
};

INSTANTIATE_TEST_SUITE_P(Rows, ExpertDispatchModes, ::testing::Values("messages", "shared_memory"),
                         [](const auto& info) { return info.param; });

TEST_P(ExpertDispatchModes, RoundTripRestoresTokensExactly) {
  const int r = world->rank(), n = world->size();
  const int64_t experts = 2 * n, tokens = 5 + r, d = 6;
  ExpertDispatcher dispatcher = make_dispatcher(experts);
  Tensor x = Tensor::empty({tokens, d}, DType::kF32);
  fill_normal(x, 1.0, 100 + r, 1);
  const Tensor ids = random_routes(tokens, experts, 7 + r);
  const DispatchLayout layout = dispatcher.plan(ids);
  const Tensor rows = dispatcher.dispatch(x, layout);
  EXPECT_EQ(rows.dim(0), layout.expert_offsets.back());
  Tensor half = Tensor::empty({tokens, 2}, DType::kF32);
  for (int64_t i = 0; i < 2 * tokens; ++i) half.data<float>()[i] = 0.5f;
  const Tensor y = dispatcher.combine(rows, half, layout);  // identity experts
  for (int64_t i = 0; i < tokens * d; ++i) ASSERT_EQ(y.data<float>()[i], x.data<float>()[i]);
  // Combine in bf16: half the bytes; each token comes back as its bf16 rounding.
  Tensor rows_bf16 = Tensor::empty(rows.shape(), DType::kBF16);
  kernels::convert(rows, rows_bf16);
  Tensor slots16;
  const Tensor y16 = dispatcher.combine(rows_bf16, half, layout, &slots16);
  check_dtype(y16, DType::kF32, "bf16 combine result");
  for (int64_t i = 0; i < tokens * d; ++i)
    ASSERT_EQ(y16.data<float>()[i], to_float(to_bf16(x.data<float>()[i])));
  // The rows kept for the backward: widened to fp32, in the plan's order.
  check_dtype(slots16, DType::kF32, "bf16 combine slot rows");
  for (int64_t s = 0; s < 2 * tokens; ++s)
    for (int64_t c = 0; c < d; ++c)
      ASSERT_EQ(slots16.data<float>()[s * d + c],
                to_float(to_bf16(x.data<float>()[layout.plan.token_of_row[s] * d + c])));
  // Every rank received exactly the copies routed to its experts by everyone.
  Tensor local = Tensor::zeros({experts}, DType::kI64);
  for (int64_t i = 0; i < 2 * tokens; ++i) ++local.data<int64_t>()[ids.data<int32_t>()[i]];
  world->all_reduce(local).wait();
  for (int64_t e = 0; e < dispatcher.experts_per_rank(); ++e)
    EXPECT_EQ(layout.expert_offsets[e + 1] - layout.expert_offsets[e],
              local.data<int64_t>()[dispatcher.first_local_expert() + e]);
}

// Backward of dispatch is combine of gradients (unweighted) and backward of combine is dispatch of
// (gate-weighted) gradients: checked as adjoint identities <A x, g> = <x, Aᵀ g> summed over ranks.
TEST_P(ExpertDispatchModes, BackwardOfDispatchAndCombineAreEachOthersTransposes) {
  const int r = world->rank(), n = world->size();
  const int64_t experts = 2 * n, tokens = 4 + r, d = 3;
  ExpertDispatcher dispatcher = make_dispatcher(experts);
  const Tensor ids = random_routes(tokens, experts, 50 + r);
  const DispatchLayout layout = dispatcher.plan(ids);
  const int64_t rows = layout.expert_offsets.back();
  auto random = [](Shape shape, uint64_t seed) {
    Tensor t = Tensor::empty(std::move(shape), DType::kF64);
    fill_normal(t, 1.0, seed, 1);
    return t;
  };
  auto dot = [](const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += a.data<double>()[i] * b.data<double>()[i];
    return s;
  };
  const Tensor x = random({tokens, d}, 60 + r), g = random({rows, d}, 70 + r);
  const Tensor w = random({tokens, 2}, 80 + r), dy = random({tokens, d}, 90 + r);
  // dispatch: x → rows;  its backward: g → Σ over the token's copies of from_experts(g).
  const Tensor dispatched = dispatcher.dispatch(x, layout);
  Tensor dx = Tensor::empty({tokens, d}, DType::kF64);
  kernels::permute_rows_backward(dispatcher.from_experts(g, layout), layout.plan, dx);
  // combine: rows → y;  its backward: dy → to_experts(gate-weighted copies of dy).
  const Tensor combined = dispatcher.combine(g, w, layout);
  Tensor slot_grads = Tensor::empty({tokens * 2, d}, DType::kF64);
  Tensor dw = Tensor::empty({tokens, 2}, DType::kF64);
  Tensor zeros = Tensor::zeros({tokens * 2, d}, DType::kF64);
  kernels::unpermute_weighted_backward(dy, zeros, w, layout.plan, slot_grads, dw);
  const Tensor dg = dispatcher.to_experts(slot_grads, layout);
  Tensor sums = Tensor::empty({4}, DType::kF64);
  sums.data<double>()[0] = dot(dispatched, g);
  sums.data<double>()[1] = dot(x, dx);
  sums.data<double>()[2] = dot(combined, dy);
  sums.data<double>()[3] = dot(g, dg);
  world->all_reduce(sums).wait();
  EXPECT_NEAR(sums.data<double>()[0], sums.data<double>()[1],
              1e-9 * (1 + std::abs(sums.data<double>()[0])));
  EXPECT_NEAR(sums.data<double>()[2], sums.data<double>()[3],
              1e-9 * (1 + std::abs(sums.data<double>()[2])));
}

TEST_P(ExpertDispatchModes, ExpertParallelMoeEqualsTheSingleProcessLayer) {
  const int r = world->rank(), n = world->size();
  ModelConfig c;
  c.d_model = 24;
  c.n_routed_experts = 2 * n;
  c.top_k = 2;
  c.d_expert = 10;
  c.n_layers = 2;
  c.seq_len = 4;
  c.init_std = 0.5;  // expert outputs of the size of x, so a misrouted row cannot hide
  // The parallel block holds only this rank's slice of the experts, as expert parallelism does.
  MoeFfnBlock reference(c, 1, DType::kF32, 11), parallel(c, 1, DType::kF32, 11, {}, {r, n});
  Tensor x = Tensor::empty({(3 + r) * c.seq_len, c.d_model}, DType::kF32);
  fill_normal(x, 1.0, 200 + r, 1);
  std::unique_ptr<BlockState> state;
  const Tensor expected = reference.forward(x, state);

  ExpertDispatcher dispatcher = make_dispatcher(c.n_routed_experts);
  // As the pipeline executor runs it: dispatch the normed tokens, experts write into the
  // dispatcher's buffer, combine forms the weighted sum and returns the rows for the backward.
  MoeState st;
  parallel.route(x, st);
  const DispatchLayout layout = dispatcher.plan(st.expert_ids);
  const Tensor rows = dispatcher.dispatch(st.normed, layout);
  // Only this rank's experts have rows; the others are empty ranges.
  EXPECT_EQ(parallel.first_local_expert(), dispatcher.first_local_expert());
  const Tensor out = parallel.run_experts(rows, layout.expert_offsets, st,
                                          dispatcher.expert_output(rows.shape(), rows.dtype()));
  parallel.run_shared(st);
  Tensor slot_rows;
  const Tensor routed = dispatcher.combine(out, st.gate_weights, layout, &slot_rows);
  const Tensor y = parallel.add_routed(x, routed, st, slot_rows);
  for (int64_t i = 0; i < y.numel(); ++i)
    ASSERT_NEAR(y.data<float>()[i], expected.data<float>()[i],
                1e-5 * (1 + std::abs(expected.data<float>()[i])));
  // The pieces the backward needs are the single-process layer's: the routed rows in plan order.
  const Tensor& expected_slots = static_cast<const MoeState&>(*state).expert_out;
  ASSERT_EQ(slot_rows.shape(), expected_slots.shape());
  for (int64_t i = 0; i < slot_rows.numel(); ++i)
    ASSERT_NEAR(slot_rows.data<float>()[i], expected_slots.data<float>()[i],
                1e-5 * (1 + std::abs(expected_slots.data<float>()[i])));
}

TEST(ExpertDispatch, NodeLimitedRoutingReachesAtMostMaxNodes) {
  const int r = world->rank(), n = world->size();
  if (n % 2 != 0) GTEST_SKIP() << "needs an even number of ranks to simulate 2 nodes";
  const Topology topology = discover_topology(*world, n / 2);  // 2 simulated nodes
  const int64_t experts = 4 * n, tokens = 40;
  Tensor logits = Tensor::empty({tokens, experts}, DType::kF32);
  fill_normal(logits, 2.0, 300 + r, 1);
  Tensor bias = Tensor::zeros({experts}, DType::kF32), affinity = logits.clone();
  Tensor ids = Tensor::empty({tokens, 4}, DType::kI32), w = Tensor::empty({tokens, 4}, DType::kF32);
  kernels::router_forward(logits, bias, 4, affinity, ids, w, {topology.nodes, 1});
  ExpertDispatcher dispatcher(*world, experts);
  for (int64_t t = 0; t < tokens; ++t) {
    std::set<int> nodes;
    for (int j = 0; j < 4; ++j)
      nodes.insert(
          topology.node_of_rank[dispatcher.rank_of_expert(ids.data<int32_t>()[t * 4 + j])]);
    EXPECT_EQ(nodes.size(), 1u);
  }
  const DispatchLayout layout = dispatcher.plan(ids);
  // Every copy this rank sends is planned: the per-expert send counts add up to all of them.
  int64_t sent = 0;
  for (int64_t e = 0; e < experts; ++e) sent += layout.plan.rows_for_expert(e);
  EXPECT_EQ(sent, tokens * 4);
}

TEST_P(ExpertDispatchModes, HierarchicalEqualsFlatAndCrossesNodesLess) {
  const int r = world->rank(), n = world->size();
  if (n % 2 != 0) GTEST_SKIP() << "needs an even number of ranks to simulate 2 nodes";
  const Topology topology = discover_topology(*world, n / 2);
  ModelConfig c;
  c.d_model = 16;
  c.n_routed_experts = 2 * n;
  c.top_k = 3;
  c.d_expert = 8;
  c.n_layers = 2;
  c.seq_len = 4;
  c.init_std = 0.5;  // expert outputs of the size of x, so a misrouted row cannot hide
  MoeFfnBlock reference(c, 1, DType::kF32, 21), parallel(c, 1, DType::kF32, 21, {}, {r, n});
  Tensor x = Tensor::empty({(4 + r) * c.seq_len, c.d_model}, DType::kF32);
  fill_normal(x, 1.0, 500 + r, 1);
  std::unique_ptr<BlockState> state;
  const Tensor expected = reference.forward(x, state);

  HierarchicalDispatcher dispatcher(*world, topology, c.n_routed_experts,
                                    parse_choice<ExpertExchange>(GetParam(), "mode"));  // fan-out
  MoeState st;
  parallel.route(x, st);
  const HierarchicalLayout layout = dispatcher.plan(st.expert_ids, st.gate_weights);
  const Tensor rows = dispatcher.dispatch(st.normed, layout);
  EXPECT_EQ(parallel.first_local_expert(), dispatcher.first_local_expert());
  // Identity experts first: the gate weights sum to one, so the tokens come back (to rounding).
  const Tensor same = dispatcher.combine(rows, layout);
  for (int64_t i = 0; i < same.numel(); ++i)
    ASSERT_NEAR(same.data<float>()[i], st.normed.data<float>()[i],
                1e-6 * (1 + std::abs(st.normed.data<float>()[i])));
  const Tensor out = parallel.run_experts(rows, layout.node.expert_offsets, st);
  parallel.run_shared(st);
  Tensor y = dispatcher.combine(out, layout);
  kernels::axpy(1.0, x, y);
  kernels::axpy(1.0, st.shared_out, y);
  for (int64_t i = 0; i < y.numel(); ++i)
    ASSERT_NEAR(y.data<float>()[i], expected.data<float>()[i],
                1e-5 * (1 + std::abs(expected.data<float>()[i])));

  // A token crosses to a remote node once, however many of its experts live there.
  int64_t flat_crossings = 0;
  for (int64_t i = 0; i < st.expert_ids.numel(); ++i)
    flat_crossings +=
        topology.node_of_rank[st.expert_ids.data<int32_t>()[i] / dispatcher.experts_per_rank()] !=
        topology.node;
  EXPECT_LE(dispatcher.rows_sent_across_nodes(), flat_crossings);
  Tensor totals = Tensor::empty({2}, DType::kI64);
  totals.data<int64_t>()[0] = dispatcher.rows_sent_across_nodes();
  totals.data<int64_t>()[1] = flat_crossings;
  world->all_reduce(totals).wait();
  EXPECT_LT(totals.data<int64_t>()[0], totals.data<int64_t>()[1]);
}

// Experts e(x) = (e + 1)·x make every expected value computable on the token's rank.
TEST_P(ExpertDispatchModes, HierarchicalBackwardMatchesItsDefinition) {
  const int r = world->rank(), n = world->size();
  if (n % 2 != 0) GTEST_SKIP() << "needs an even number of ranks to simulate 2 nodes";
  const Topology topology = discover_topology(*world, n / 2);
  const int64_t experts = 2 * n, tokens = 6 + r, d = 5, k = 3;
  HierarchicalDispatcher dispatcher(*world, topology, experts,
                                    parse_choice<ExpertExchange>(GetParam(), "mode"));
  Tensor ids = Tensor::empty({tokens, k}, DType::kI32), w = Tensor::empty({tokens, k}, DType::kF32);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j) {  // k distinct experts per token
      ids.data<int32_t>()[t * k + j] =
          static_cast<int32_t>((random_bits(600 + r, 1, t) + j * (experts / k)) % experts);
      w.data<float>()[t * k + j] = 0.25f + 0.125f * static_cast<float>(j);
    }
  auto random = [](Shape shape, uint64_t seed) {
    Tensor t = Tensor::empty(std::move(shape), DType::kF32);
    fill_normal(t, 1.0, seed, 1);
    return t;
  };
  const Tensor x = random({tokens, d}, 610 + r), dy = random({tokens, d}, 620 + r);
  const HierarchicalLayout layout = dispatcher.plan(ids, w);
  const Tensor rows = dispatcher.dispatch(x, layout);
  Tensor out = rows.clone();
  for (int64_t e = 0; e < dispatcher.experts_per_rank(); ++e)
    for (int64_t i = layout.node.expert_offsets[e]; i < layout.node.expert_offsets[e + 1]; ++i)
      for (int64_t c = 0; c < d; ++c)
        out.data<float>()[i * d + c] *= float(dispatcher.first_local_expert() + e + 1);
  Tensor copy_out;
  const Tensor y = dispatcher.combine(out, layout, &copy_out);
  Tensor d_gates;
  const Tensor d_out = dispatcher.combine_backward(dy, copy_out, layout, d_gates);
  const Tensor g = random({rows.dim(0), d}, 630 + r);
  const Tensor dx = dispatcher.dispatch_backward(g, layout);
  for (int64_t t = 0; t < tokens; ++t) {
    double dot = 0;
    for (int64_t c = 0; c < d; ++c)
      dot += double(dy.data<float>()[t * d + c]) * x.data<float>()[t * d + c];
    for (int64_t c = 0; c < d; ++c) {
      double expected = 0;
      for (int64_t j = 0; j < k; ++j)
        expected += w.data<float>()[t * k + j] * (ids.data<int32_t>()[t * k + j] + 1.0) *
                    x.data<float>()[t * d + c];
      ASSERT_NEAR(y.data<float>()[t * d + c], expected, 1e-5 * (1 + std::abs(expected)));
    }
    for (int64_t j = 0; j < k; ++j) {
      const double expected = (ids.data<int32_t>()[t * k + j] + 1.0) * dot;
      ASSERT_NEAR(d_gates.data<float>()[t * k + j], expected, 1e-4 * (1 + std::abs(expected)));
    }
  }
  auto dot = [](const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += double(a.data<float>()[i]) * b.data<float>()[i];
    return s;
  };
  Tensor sums = Tensor::empty({4}, DType::kF64);
  sums.data<double>()[0] = dot(rows, g);     // <dispatch(x), g>
  sums.data<double>()[1] = dot(x, dx);       // <x, dispatchᵀ g>
  sums.data<double>()[2] = dot(y, dy);       // <combine(out), dy>
  sums.data<double>()[3] = dot(out, d_out);  // <out, combineᵀ dy>
  world->all_reduce(sums).wait();
  EXPECT_NEAR(sums.data<double>()[0], sums.data<double>()[1],
              1e-4 * (1 + std::abs(sums.data<double>()[0])));
  EXPECT_NEAR(sums.data<double>()[2], sums.data<double>()[3],
              1e-4 * (1 + std::abs(sums.data<double>()[2])));
}

// The MoE block's one walk, run with each expert-parallel exchange on this rank's slice of the
// experts, gives the single-process layer's output, input gradient and weight gradients (the
// routed experts' summed over the ranks whose tokens they served).
TEST_P(ExpertDispatchModes, TheMoeWalkWithEachExchangeEqualsTheSingleProcessLayer) {
  const int r = world->rank(), n = world->size();
  ModelConfig c;
  c.d_model = 16;
  c.n_routed_experts = 4 * n;
  c.top_k = 3;
  c.d_expert = 8;
  c.n_layers = 2;
  c.seq_len = 4;
  c.init_std = 0.5;  // expert outputs of the size of x, so a misrouted row cannot hide
  Tensor x = Tensor::empty({(2 + r) * c.seq_len, c.d_model}, DType::kF32);
  fill_normal(x, 1.0, 700 + r, 1);
  Tensor dy = x.clone();
  fill_normal(dy, 1.0, 700 + r, 2);
  MoeFfnBlock reference(c, 1, DType::kF32, 31);
  std::unique_ptr<BlockState> state;
  const Tensor expected = reference.forward(x, state);
  const Tensor expected_dx = reference.backward_input(dy, *state);
  reference.backward_weight(*state);
  std::map<std::string, Tensor> expected_grad;
  for (Parameter* p : reference.parameters()) {
    Tensor grad = p->grad.clone();
    if (p->name.find(".experts.") != std::string::npos) world->all_reduce(grad).wait();
    expected_grad[p->name] = grad;
  }
  auto expect_near = [](const Tensor& got, const Tensor& want, const std::string& what) {
    ASSERT_EQ(got.shape(), want.shape()) << what;
    for (int64_t i = 0; i < got.numel(); ++i)
      ASSERT_NEAR(got.data<float>()[i], want.data<float>()[i],
                  1e-5 * (1 + std::abs(want.data<float>()[i])))
          << what << " element " << i;
  };

  ExpertDispatcher flat = make_dispatcher(c.n_routed_experts);
  std::unique_ptr<HierarchicalDispatcher> hierarchical;
  if (n % 2 == 0)
    hierarchical = std::make_unique<HierarchicalDispatcher>(
        *world, discover_topology(*world, n / 2), c.n_routed_experts,
        parse_choice<ExpertExchange>(GetParam(), "mode"));
  for (const parallel::ChunkComm& comm :
       {parallel::ChunkComm{&flat, &flat, nullptr},
        parallel::ChunkComm{nullptr, nullptr, hierarchical.get()}}) {
    if (!comm.forward && !comm.hierarchical) continue;  // no hierarchical on an odd world
    const std::string name = comm.forward ? "flat" : "hierarchical";
    parallel::AllToAllStats stats;
    parallel::ChunkComm booked = comm;
    booked.stats = &stats;
    MoeFfnBlock sliced(c, 1, DType::kF32, 31, {}, {r, n});
    MoeState st;
    Tensor y, dx;
    const auto forward_exchange = parallel::make_exchange(booked, parallel::ExchangeFor::kForward);
    sliced.forward_task(x, st, *forward_exchange, &y).run_to_end();
    expect_near(y, expected, name + " output");
    const auto backward_exchange =
        parallel::make_exchange(booked, parallel::ExchangeFor::kBackward);
    sliced.backward_task(dy, st, *backward_exchange, &dx).run_to_end();
    expect_near(dx, expected_dx, name + " input gradient");
    sliced.backward_weight(st);
    for (Parameter* p : sliced.parameters())
      expect_near(p->grad, expected_grad[p->name], name + " " + p->name);
    EXPECT_EQ(stats.calls(), 4) << name << ": dispatch, combine and their backwards";
    EXPECT_EQ(stats[parallel::ExchangeDirection::kDispatch].calls, 2)
        << name << ": the dispatch and the combine's backward move rows to the experts";
    EXPECT_EQ(stats[parallel::ExchangeDirection::kCombine].calls, 2)
        << name << ": the combine and the dispatch's backward move them back";
  }
}

TEST_P(ExpertDispatchModes, Fp8PayloadTravelsWithItsScales) {
  const int r = world->rank(), n = world->size();
  const int64_t tokens = 6, d = 200;
  Tensor x = Tensor::empty({tokens, d}, DType::kF32);
  fill_normal(x, 3.0, 400 + r, 1);
  const auto q = kernels::quantize(x, kernels::ScaleGranularity::kTile1x128);
  const Tensor payload = kernels::pack_fp8_rows(q);
  ExpertDispatcher dispatcher = make_dispatcher(n);
  Tensor ids = random_routes(tokens, std::max(n, 2), 9 + r);
  if (n == 1) ids.zero_();
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] %= n;
  const DispatchLayout layout = dispatcher.plan(ids);
  const Tensor rows = dispatcher.dispatch(payload, layout);
  const Tensor back = dispatcher.from_experts(rows, layout);  // round trip in slot order
  const auto unpacked = kernels::unpack_fp8_rows(back, d, kernels::Fp8Format::kE4M3);
  const Tensor values = kernels::dequantize(unpacked), original = kernels::dequantize(q);
  for (int64_t s = 0; s < tokens * 2; ++s) {
    const int64_t token = layout.plan.token_of_row[s];
    for (int64_t c = 0; c < d; ++c)
      ASSERT_EQ(values.data<float>()[s * d + c], original.data<float>()[token * d + c]);
  }
}

int skip_collective_demo(int timeout_ms) {
  WorldOptions options;
  options.timeout_ms = timeout_ms;
  World job = join_world(options);  // MPI under mpirun, UCX when started the torchrun way
  Communicator* comm = job.comm.get();
  Tensor t = Tensor::zeros({1024}, DType::kF32);
  try {
    comm->all_reduce(t).wait();                         // #1: everyone
    if (comm->rank() != 1) comm->all_reduce(t).wait();  // #2: rank 1 skips it...
    comm->barrier().wait();                             // ...and waits at the barrier
  } catch (const CommFault& fault) {
    std::fprintf(stderr, "comm_test: %s\n", fault.what());
    std::fflush(stderr);
    job.watchdog->linger_for_peer_reports();
    std::_Exit(kCommFaultExitCode);  // MPI cannot be finalised with an operation stuck in flight
  } catch (const std::exception& error) {
    std::fprintf(stderr, "comm_test: not a communication fault: %s\n", error.what());
    std::fflush(stderr);
    std::_Exit(kOtherErrorExitCode);
  }
  std::fprintf(stderr, "comm_test: no timeout happened\n");
  std::_Exit(0);
}

}  // namespace
}  // namespace tandem::comm

int main(int argc, char** argv) {
  using namespace tandem::comm;
  const char* timeout_env = std::getenv("TANDEM_COMM_TIMEOUT_MS");
  const int timeout_ms = timeout_env ? std::atoi(timeout_env) : 60000;
  if (argc > 1 && std::strcmp(argv[1], "--skip-collective") == 0)
    return skip_collective_demo(timeout_ms);
  ::testing::InitGoogleTest(&argc, argv);
  int failed = 0;
  {
    // TANDEM_COMM_BACKEND=ucx runs the same tests on the UCX backend (how torchrun- and
    // slurm-started jobs without MPI communicate); the default picks MPI under mpirun.
    WorldOptions options;
    options.timeout_ms = timeout_ms;
    if (const char* backend = std::getenv("TANDEM_COMM_BACKEND"))
      options.backend = tandem::parse_choice<tandem::CommBackend>(backend, "TANDEM_COMM_BACKEND");
    World job = join_world(options);
    Communicator* comm = job.comm.get();
    world = comm;
    joined = &job;
    std::unique_ptr<Communicator> ucx_over_mpi;
    ucx = dynamic_cast<P2PCommunicator*>(comm);
    if (!ucx) {
      ucx_over_mpi = UcxCommunicator::over(*comm);
      ucx = static_cast<P2PCommunicator*>(ucx_over_mpi.get());
    }
    if (comm->rank() == 0)
      std::printf("comm_test: %d ranks, %s launch, %s backend\n", comm->size(),
                  launcher_name(job.launch.launcher),
                  std::string(choice_name(options.backend)).c_str());
    if (comm->rank() != 0) {  // one report, from rank 0; failures elsewhere still fail the run
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
    }
    failed = RUN_ALL_TESTS();
    tandem::Tensor any = tandem::Tensor::empty({1}, tandem::DType::kI32);
    any.data<int32_t>()[0] = failed;
    comm->all_reduce(any, ReduceOp::kMax).wait();
    if (any.data<int32_t>()[0] && !failed && comm->rank() == 0)
      std::fprintf(stderr, "comm_test: a test failed on another rank\n");
    failed = any.data<int32_t>()[0];
    world = nullptr;
    joined = nullptr;
    ucx = nullptr;
  }
  return failed ? 1 : 0;
}
