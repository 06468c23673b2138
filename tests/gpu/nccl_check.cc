// GPU check of the NCCL backend and CUDA device memory paths (scripts/gpu-check runs it on a GPU
// machine; CI builds and links it, and without a GPU it reports that it skipped). Every result is
// compared with what the rank computes on the host from all ranks' inputs.
#include <cstdio>

#include "comm/expert_dispatch.h"
#include "comm/nccl/nccl_communicator.h"
#include "comm/topology.h"
#include "comm/world.h"
#include "kernels/permute.h"
#include "runtime/core/device.h"
#include "tests/gpu/check_report.h"

using namespace tandem;
using tandem::gpu_check::expect;
using tandem::gpu_check::failures;
using namespace tandem::comm;

int main() {
  World world = join_world();
  if (gpu_check::skipped_without_gpu("nccl_check")) return 0;
  const int rank = world.comm->rank(), n = world.comm->size();
  const int device = local_cuda_device(discover_topology(*world.comm));
  auto owner = NcclCommunicator::create(*world.comm, device, 60000);
  Communicator* nccl = owner.get();  // the interface, with its default arguments
  const Device gpu = Device::cuda(device);

  Tensor host = Tensor::empty({1000}, DType::kF32);
  for (int i = 0; i < 1000; ++i) host.data<float>()[i] = float((rank + 1) * (i % 13));
  Tensor x = host.to(gpu);
  nccl->all_reduce(x).wait();
  Tensor back = x.to(Device::cpu());
  bool ok = true;
  for (int i = 0; i < 1000; ++i) ok &= back.data<float>()[i] == float(n * (n + 1) / 2 * (i % 13));
  expect(ok, "all_reduce fp32 on device memory");

  Tensor gathered = Tensor::empty({1000 * n}, DType::kF32, gpu);
  nccl->all_gather(host.to(gpu), gathered).wait();
  back = gathered.to(Device::cpu());
  ok = true;
  for (int p = 0; p < n; ++p)
    for (int i = 0; i < 1000; ++i)
      ok &= back.data<float>()[p * 1000 + i] == float((p + 1) * (i % 13));
  expect(ok, "all_gather");

  std::vector<int64_t> rows(n, 3);
  Tensor send = Tensor::empty({3 * n, 8}, DType::kBF16), recv_host;
  for (int64_t i = 0; i < send.numel(); ++i) send.data<bf16>()[i] = to_bf16(float(rank * 1000 + i));
  Tensor recv = Tensor::empty({3 * n, 8}, DType::kBF16, gpu);
  nccl->all_to_all_v(send.to(gpu), rows, recv, rows).wait();
  recv_host = recv.to(Device::cpu());
  ok = true;
  for (int p = 0; p < n; ++p)
    for (int64_t i = 0; i < 24; ++i)
      ok &= to_float(recv_host.data<bf16>()[p * 24 + i]) ==
            to_float(to_bf16(float(p * 1000 + rank * 24 + i)));
  expect(ok, "all_to_all_v bf16 rows");

  Tensor b = Tensor::empty({16}, DType::kI64);
  for (int i = 0; i < 16; ++i) b.data<int64_t>()[i] = rank == 0 ? i * 7 : -1;
  Tensor db = b.to(gpu);
  nccl->broadcast(db, 0).wait();
  back = db.to(Device::cpu());
  ok = true;
  for (int i = 0; i < 16; ++i) ok &= back.data<int64_t>()[i] == i * 7;
  expect(ok, "broadcast int64");

  auto half = nccl->split(rank % 2, rank);
  expect(half->size() == (n + 1 - rank % 2) / 2, "split");

  // The expert dispatch and combine on device memory, over a group of this rank alone (one GPU
  // cannot hold two NCCL ranks): the count exchange, the payload rows sent to the expert-major
  // layout and the weighted sum back, against the CPU's plan and kernels on the same ids.
  auto self = nccl->split(rank, 0);
  {
    const int64_t tokens = 37, k = 3, experts = 8, d = 24;
    Tensor ids = Tensor::empty({tokens, k}, DType::kI32);
    Tensor gates = Tensor::empty({tokens, k}, DType::kF32);
    Tensor rows_in = Tensor::empty({tokens, d}, DType::kF32);
    for (int64_t i = 0; i < tokens * k; ++i) {  // three distinct experts per token
      ids.data<int32_t>()[i] = static_cast<int32_t>(((i / k) * 3 + (i % k) * 2) % experts);
      gates.data<float>()[i] = 0.1f + 0.01f * static_cast<float>(i % 17);
    }
    for (int64_t i = 0; i < tokens * d; ++i) rows_in.data<float>()[i] = float(i % 29) - 14.5f;
    ExpertDispatcher dispatcher(*self, experts);
    const DispatchLayout layout = dispatcher.plan(ids.to(gpu));
    const kernels::PermutePlan cpu_plan = kernels::make_permute_plan(ids, experts);
    Tensor expected = Tensor::empty({tokens * k, d}, DType::kF32);
    kernels::permute_rows(rows_in, cpu_plan, expected);
    const Tensor dispatched = dispatcher.dispatch(rows_in.to(gpu), layout);
    expect(dispatched.device() == gpu && layout.expert_offsets == cpu_plan.expert_offsets,
           "expert dispatch: the layout from the device count exchange");
    expect(gpu_check::largest_relative_difference(dispatched, expected) == 0,
           "expert dispatch on device memory (rows bit-exact)");
    Tensor slot_rows;
    const Tensor combined = dispatcher.combine(dispatched, gates.to(gpu), layout, &slot_rows);
    Tensor y = Tensor::empty({tokens, d}, DType::kF32);
    kernels::unpermute_weighted(expected, gates, cpu_plan, y);
    expect(gpu_check::largest_relative_difference(combined, y) < 1e-6,
           "expert combine on device memory (weighted sum)");
    expect(gpu_check::largest_relative_difference(slot_rows, expected) == 0,
           "expert combine keeps the returned rows for its backward");
  }
  nccl->barrier().wait();
  std::printf("nccl_check: %d ranks, %s\n", n, failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
