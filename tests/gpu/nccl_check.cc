// GPU check of the NCCL backend and CUDA device memory paths (scripts/gpu-check runs it on a GPU
// machine; CI builds and links it, and without a GPU it reports that it skipped). Every result is
// compared with what the rank computes on the host from all ranks' inputs.
#include <cstdio>

#include "comm/nccl/nccl_communicator.h"
#include "comm/topology.h"
#include "comm/world.h"
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
  nccl->barrier().wait();
  std::printf("nccl_check: %d ranks, %s\n", n, failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
