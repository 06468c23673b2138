// Flat gradient buckets, their reductions, the slices each rank updates, and the ZeRO-1 gather.
#include "parallelism/gradient_sync.h"

#include <algorithm>

#include "kernels/elementwise.h"

namespace tandem::parallel {

// One replicated parameter set: flat gradient (and, under ZeRO-1, flat parameter) storage padded
// to a multiple of the group size, with each parameter's tensors being views into it.
struct GradientSync::Bucket {
  ReplicatedParameters set;
  DType dtype = DType::kF32;
  int64_t elements = 0;          // without padding
  int64_t shard = 0;             // elements per rank under ZeRO-1 (padded total / group size)
  std::vector<int64_t> offsets;  // of each parameter in the flat buffers
  Tensor grads;                  // flat [padded]
  Tensor values;                 // ZeRO-1: flat [padded] parameters
  Tensor shard_grads;            // ZeRO-1: this rank's reduced shard [shard]
  bool ready = false;
  comm::CommHandle handle;

  int64_t shard_begin() const { return set.group->rank() * shard; }
};

namespace {
Tensor flat_view(const Tensor& flat, int64_t offset, const Shape& shape) {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return flat.rows(offset, offset + n).reshape(shape);
}
}  // namespace

GradientSync::GradientSync(std::vector<ReplicatedParameters> sets, bool zero1) : zero1_(zero1) {
  std::stable_sort(sets.begin(), sets.end(),
                   [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& set : sets) {
    if (set.params.empty()) continue;
    auto bucket = std::make_unique<Bucket>();
    bucket->dtype = set.params[0]->value.dtype();
    const Device device = set.params[0]->value.device();
    for (Parameter* p : set.params) {
      TANDEM_CHECK(p->value.dtype() == bucket->dtype, "mixed dtypes in ", set.name);
      TANDEM_CHECK(p->value.device() == device, set.name, " has parameters on ", device.to_string(),
                   " and ", p->value.device().to_string());
      bucket->offsets.push_back(bucket->elements);
      bucket->elements += p->value.numel();
    }
    const int64_t ranks = set.group->size();
    bucket->shard = (bucket->elements + ranks - 1) / ranks;
    const int64_t padded = bucket->shard * ranks;
    bucket->grads = Tensor::zeros({padded}, bucket->dtype, device);
    if (zero1) bucket->values = Tensor::zeros({padded}, bucket->dtype, device);
    for (size_t i = 0; i < set.params.size(); ++i) {
      Parameter& p = *set.params[i];
      Tensor grad = flat_view(bucket->grads, bucket->offsets[i], p.value.shape());
      grad.copy_from(p.grad);
      p.grad = grad;
      if (zero1) {
        Tensor value = flat_view(bucket->values, bucket->offsets[i], p.value.shape());
        value.copy_from(p.value);
        p.value = value;
      }
    }
    if (zero1) bucket->shard_grads = Tensor::zeros({bucket->shard}, bucket->dtype, device);
    bucket->set = std::move(set);
    buckets_.push_back(std::move(bucket));
  }
}

GradientSync::~GradientSync() = default;

void GradientSync::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->ready) {
    Bucket& b = *buckets_[next_launch_++];
    comm::Communicator& group = *b.set.group;
    if (group.size() > 1) {
      record_event(events_, StepEventKind::kReductionStarted, b.set.order);
      b.handle = zero1_ ? group.reduce_scatter(b.grads, b.shard_grads) : group.all_reduce(b.grads);
    } else if (zero1_) {
      b.shard_grads.copy_from(b.grads);
    }
  }
}

void GradientSync::block_ready(int chunk, size_t block) {
  for (auto& b : buckets_)
    if (b->set.chunk == chunk && b->set.block == block) b->ready = true;
  launch_ready();
}

void GradientSync::chunk_ready(int chunk) {
  for (auto& b : buckets_)
    if (b->set.chunk == chunk) b->ready = true;
  launch_ready();
}

void GradientSync::finish() {
  for (auto& b : buckets_) b->ready = true;
  launch_ready();
  for (auto& b : buckets_) b->handle.wait();
}

double GradientSync::owned_sum_of_squares() const {
  std::vector<const Tensor*> owned;
  for (const auto& b : buckets_) {
    if (zero1_) {
      owned.push_back(&b->shard_grads);  // padding is zero
    } else if (b->set.group->rank() == 0) {
      owned.push_back(&b->grads);
    }
  }
  return kernels::sum_of_squares(owned);
}

std::vector<ParameterSlice> GradientSync::update_slices() {
  std::vector<ParameterSlice> out;
  for (auto& bucket : buckets_) {
    Bucket& b = *bucket;
    // The stretch [begin, end) of the flat buffers this rank updates, and where its parameters
    // fall in it.
    const int64_t begin = zero1_ ? b.shard_begin() : 0;
    const int64_t end = zero1_ ? begin + b.shard : b.elements;
    for (size_t i = 0; i < b.set.params.size(); ++i) {
      Parameter& p = *b.set.params[i];
      const int64_t p_begin = std::max(begin, b.offsets[i]);
      const int64_t p_end = std::min(end, b.offsets[i] + p.value.numel());
      if (p_begin >= p_end) continue;
      if (!zero1_) {
        out.push_back(ParameterSlice::whole(p));
        continue;
      }
      out.push_back({&p, p_begin - b.offsets[i], p_end - b.offsets[i],
                     b.values.rows(p_begin, p_end),
                     b.shard_grads.rows(p_begin - begin, p_end - begin)});
    }
  }
  return out;
}

std::vector<bool> GradientSync::saved_here() const {
  std::vector<bool> out;
  for (const auto& bucket : buckets_) {
    const Bucket& b = *bucket;
    const int64_t begin = zero1_ ? b.shard_begin() : 0;
    const int64_t end = zero1_ ? begin + b.shard : b.elements;
    const int replicas = b.set.group->size(), me = b.set.group->rank();
    // The same walk as update_slices, so the flags line up with its slices.
    for (size_t i = 0; i < b.set.params.size(); ++i) {
      const int64_t numel = b.set.params[i]->value.numel();
      if (std::max(begin, b.offsets[i]) >= std::min(end, b.offsets[i] + numel)) continue;
      out.push_back(zero1_ || static_cast<int>(i % static_cast<size_t>(replicas)) == me);
    }
  }
  return out;
}

void GradientSync::gather_parameters() {
  if (!zero1_) return;
  // Every replica gets the whole updated set back; the shard is copied out first because the
  // all-gather writes over the flat parameter buffer it is part of.
  std::vector<Tensor> shards;
  std::vector<comm::CommHandle> gathers;
  for (auto& b : buckets_) {
    if (b->set.group->size() == 1) continue;
    shards.push_back(b->values.rows(b->shard_begin(), b->shard_begin() + b->shard).clone());
    gathers.push_back(b->set.group->all_gather(shards.back(), b->values));
  }
  for (auto& g : gathers) g.wait();
}

void GradientSync::zero_grad() {
  for (auto& b : buckets_) b->grads.zero_();
  for (auto& b : buckets_) {
    b->ready = false;
    if (zero1_) b->shard_grads.zero_();
  }
  next_launch_ = 0;
}

}  // namespace tandem::parallel
