// Communication bandwidth on this machine, each figure against a reference measured in the same
// run on the same bytes: tandem's all_to_all_v and expert dispatch+combine against Open MPI's own
// MPI_Alltoallv and single-core memcpy, and UCX against MPI for pipeline-sized send/recv.
// Dispatch + combine runs three ways: messages over MPI, messages over UCX, and in the node's
// shared memory.
//   mpirun -np 4 comm_bandwidth [MiB per rank, default 64]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "bench/collective_timing.h"
#include "comm/expert_dispatch.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/ucx/ucx_communicator.h"
#include "runtime/core/random.h"

namespace {

using namespace tandem;
using namespace tandem::comm;

using bench::best_time_s;

}  // namespace

int main(int argc, char** argv) {
  auto world_owner = MpiCommunicator::world(WatchdogOptions::with_timeout(120000));
  Communicator& world = *world_owner;
  const int rank = world.rank(), n = world.size();
  const double mib = argc > 1 ? std::atof(argv[1]) : 64.0;
  const int64_t bytes = static_cast<int64_t>(mib * (1 << 20)) / (n * 256) * (n * 256);
  const bool lead = rank == 0;
  if (lead)
    std::printf("comm_bandwidth: %d ranks, %.1f MiB sent per rank per exchange\n\n", n,
                bytes / 1048576.0);

  // memcpy on one core, same bytes.
  std::vector<char> a(bytes, 1), b(bytes, 0);
  const double memcpy_s = best_time_s(world, [&] { std::memcpy(b.data(), a.data(), bytes); });

  // MPI_Alltoallv, equal blocks, on the raw buffers.
  std::vector<int> counts(n, static_cast<int>(bytes / n)), displs(n);
  for (int p = 0; p < n; ++p) displs[p] = static_cast<int>(p * (bytes / n));
  const double mpi_s = best_time_s(world, [&] {
    MPI_Alltoallv(a.data(), counts.data(), displs.data(), MPI_BYTE, b.data(), counts.data(),
                  displs.data(), MPI_BYTE, MPI_COMM_WORLD);
  });

  // tandem all_to_all_v (MPI backend), fp32 rows of 256 elements, same bytes.
  const int64_t rows = bytes / 1024;
  Tensor send = Tensor::empty({rows, 256}, DType::kF32), recv = send.clone();
  std::vector<int64_t> per_peer(n, rows / n);
  const double a2a_s =
      best_time_s(world, [&] { world.all_to_all_v(send, per_peer, recv, per_peer).wait(); });

  // Expert dispatch + combine: tokens of d = 256 fp32, top-2 over 2 experts per rank, uniform
  // routing, sized so one dispatch moves the same bytes per rank as the exchanges above.
  const int64_t d = 256, tokens = rows / 2, experts = 2 * n;
  Tensor x = Tensor::empty({tokens, d}, DType::kF32),
         gates = Tensor::empty({tokens, 2}, DType::kF32);
  fill_normal(x, 1.0, 1 + rank, 1);
  Tensor ids = Tensor::empty({tokens, 2}, DType::kI32);
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t e = random_bits(7, rank, t) % experts;
    ids.data<int32_t>()[2 * t] = static_cast<int32_t>(e);
    ids.data<int32_t>()[2 * t + 1] =
        static_cast<int32_t>((e + 1 + random_bits(8, rank, t) % (experts - 1)) % experts);
    gates.data<float>()[2 * t] = gates.data<float>()[2 * t + 1] = 0.5f;
  }
  // The experts are the identity: combine sends back what dispatch delivered, from the buffer it
  // was delivered in (in shared memory when the dispatcher uses it, as an expert's output is).
  auto dispatch_combine = [&](ExpertDispatcher& dispatcher) {
    return best_time_s(world, [&] {
      const DispatchLayout layout = dispatcher.plan(ids);
      const Tensor expert_rows = dispatcher.dispatch(x, layout);
      const Tensor y = dispatcher.combine(expert_rows, gates, layout);
    });
  };
  ExpertDispatcher dispatcher(world, experts);
  const double dispatch_s = dispatch_combine(dispatcher);
  std::string why_not;
  auto shared = NodeSharedMemory::open(world, &why_not);
  double shared_s = 0;
  if (shared) {
    ExpertDispatcher shared_dispatcher(world, experts, shared);
    shared_s = dispatch_combine(shared_dispatcher);
  } else if (lead) {
    std::printf("shared memory unavailable: %s\n", why_not.c_str());
  }
  // The reference for dispatch+combine: two MPI_Alltoallv of the same payload (there and back).
  const double reference_s = 2 * mpi_s;

  // Pipeline-sized point-to-point: rank 0 → rank 1, MPI vs UCX.
  double mpi_p2p = 0, ucx_p2p = 0, ucx_dispatch_s = 0;
  const int64_t message = 4 << 20;  // a micro-batch of activations: 4096 tokens × 256 fp32
  if (n >= 2) {
    auto ucx = UcxCommunicator::over(world);
    Tensor msg = Tensor::empty({message}, DType::kU8);
    auto pingpong = [&](Communicator& c) {
      return [&c, &msg, rank] {
        for (int i = 0; i < 4; ++i) {
          if (rank == 0) c.send(msg, 1, i).wait();
          if (rank == 1) c.recv(msg, 0, i).wait();
        }
      };
    };
    mpi_p2p = 4.0 * message / best_time_s(world, pingpong(world));
    ucx_p2p = 4.0 * message / best_time_s(world, pingpong(*ucx));
    ExpertDispatcher ucx_dispatcher(*ucx, experts);
    ucx_dispatch_s = best_time_s(world, [&] {
      const DispatchLayout layout = ucx_dispatcher.plan(ids);
      const Tensor y = ucx_dispatcher.combine(ucx_dispatcher.dispatch(x, layout), gates, layout);
    });
  }

  if (lead) {
    auto gbs = [&](double s, double moved) { return moved / s / 1e9; };
    std::printf("%-40s %9s\n", "", "GB/s");
    std::printf("%-40s %9.2f\n", "memcpy, one core (read+write counted once)",
                gbs(memcpy_s, bytes));
    std::printf("%-40s %9.2f\n", "MPI_Alltoallv (bytes sent per rank)", gbs(mpi_s, bytes));
    std::printf("%-40s %9.2f   ratio to MPI_Alltoallv %.2f\n", "tandem all_to_all_v",
                gbs(a2a_s, bytes), mpi_s / a2a_s);
    std::printf("%-40s %9.2f   ratio to 2 x MPI_Alltoallv %.2f\n",
                "dispatch + combine, messages (MPI)", gbs(dispatch_s, 2.0 * bytes),
                reference_s / dispatch_s);
    if (shared)
      std::printf("%-40s %9.2f   ratio to 2 x MPI_Alltoallv %.2f\n",
                  "dispatch + combine, shared memory", gbs(shared_s, 2.0 * bytes),
                  reference_s / shared_s);
    if (n >= 2) {
      std::printf("\npipeline send/recv, %lld MiB messages, rank 0 -> 1:\n",
                  static_cast<long long>(message >> 20));
      std::printf("%-40s %9.2f\n", "MPI (ob1/vader)", mpi_p2p / 1e9);
      std::printf("%-40s %9.2f   ratio to MPI %.2f\n", "UCX (tandem backend)", ucx_p2p / 1e9,
                  ucx_p2p / mpi_p2p);
      std::printf("%-40s %9.2f   ratio to 2 x MPI_Alltoallv %.2f\n",
                  "dispatch + combine, messages (UCX)", gbs(ucx_dispatch_s, 2.0 * bytes),
                  reference_s / ucx_dispatch_s);
    }
  }
  return 0;
}
