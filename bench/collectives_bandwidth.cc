// Reductions without MPI: tandem's UCX all_reduce and reduce_scatter against Open MPI's
// MPI_Allreduce and MPI_Reduce_scatter_block on the same fp32 buffers, in the same run, from 1 to
// 256 MiB. Each line prints the bus bandwidths (2(N-1)/N of the buffer per rank for all_reduce,
// (N-1)/N for reduce_scatter, over the slowest rank's best time) of MPI, of tandem as it runs on
// one node (the node's shared memory) and of tandem's ring of messages (what runs between nodes;
// here over UCX's TCP on loopback), and the ratios to MPI.
//   mpirun -np 4 collectives_bandwidth [largest MiB, default 256]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "bench/collective_timing.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/ucx/ucx_communicator.h"

namespace {

using namespace tandem;
using namespace tandem::comm;

using bench::best_time_s;

}  // namespace

int main(int argc, char** argv) {
  auto world_owner = MpiCommunicator::world(WatchdogOptions::with_timeout(300000));
  Communicator& world = *world_owner;
  auto ucx = UcxCommunicator::over(world);
  auto ring = UcxCommunicator::over(world);
  ring->set_node_collectives(false);
  const int n = world.size();
  const double largest_mib = argc > 1 ? std::atof(argv[1]) : 256.0;
  if (world.rank() == 0) {
    std::printf("collectives_bandwidth: %d ranks, fp32, bus GB/s (slowest rank, best of 3-5)\n", n);
    std::printf("%8s  %-14s %9s %9s %7s %9s %7s\n", "MiB", "op", "MPI", "node", "ratio", "ring",
                "ratio");
  }
  for (double mib = 1; mib <= largest_mib; mib *= 4) {
    const int64_t numel = static_cast<int64_t>(mib * (1 << 20) / 4) / n * n;
    const int trials = mib >= 64 ? 3 : 5;
    Tensor buffer = Tensor::zeros({numel}, DType::kF32),
           shard = Tensor::zeros({numel / n}, DType::kF32);
    const int count = static_cast<int>(numel);
    const double mpi_all_reduce = best_time_s(
        world,
        [&] {
          MPI_Allreduce(MPI_IN_PLACE, buffer.raw_data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        },
        trials);
    const double ucx_all_reduce = best_time_s(
        world, [&] { ucx->all_reduce(buffer).wait(); }, trials);
    const double ring_all_reduce = best_time_s(
        world, [&] { ring->all_reduce(buffer).wait(); }, 2);
    const double mpi_reduce_scatter = best_time_s(
        world,
        [&] {
          MPI_Reduce_scatter_block(buffer.raw_data(), shard.raw_data(), count / n, MPI_FLOAT,
                                   MPI_SUM, MPI_COMM_WORLD);
        },
        trials);
    const double ucx_reduce_scatter = best_time_s(
        world, [&] { ucx->reduce_scatter(buffer, shard).wait(); }, trials);
    const double ring_reduce_scatter = best_time_s(
        world, [&] { ring->reduce_scatter(buffer, shard).wait(); }, 2);
    if (world.rank() != 0) continue;
    const double bytes = static_cast<double>(buffer.nbytes());
    auto bus = [&](double seconds, double factor) { return factor * bytes / seconds / 1e9; };
    const double ar = 2.0 * (n - 1) / n, rs = 1.0 * (n - 1) / n;
    std::printf("%8.0f  %-14s %9.2f %9.2f %7.2f %9.2f %7.2f\n", mib, "all_reduce",
                bus(mpi_all_reduce, ar), bus(ucx_all_reduce, ar), mpi_all_reduce / ucx_all_reduce,
                bus(ring_all_reduce, ar), mpi_all_reduce / ring_all_reduce);
    std::printf("%8.0f  %-14s %9.2f %9.2f %7.2f %9.2f %7.2f\n", mib, "reduce_scatter",
                bus(mpi_reduce_scatter, rs), bus(ucx_reduce_scatter, rs),
                mpi_reduce_scatter / ucx_reduce_scatter, bus(ring_reduce_scatter, rs),
                mpi_reduce_scatter / ring_reduce_scatter);
    std::fflush(stdout);
  }
  return 0;
}
