// The public data-source interface: a training codebase supplies its own tokens, and sampling
// stays a pure function of (split, step, sequence), so that runs are reproducible and resumable.
#pragma once

#include <cstdint>
#include <span>

namespace tandem {

enum class Split { kTrain, kHeldOut };

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Writes the model.seq_len + 1 tokens of sequence `sequence` (0-based, within the global batch)
  // of global batch `step` (0-based: the batch trained by optimizer step step + 1; evaluations
  // number their batches from 0) of `split`: the first seq_len are the input, the last seq_len
  // the targets. Every token must be in [0, model.vocab_size). It must depend on its arguments
  // only: every rank builds its own share of a batch, and a resumed run asks again for the
  // batches after its checkpoint. Called on the training thread. An exception stops the run
  // before the step it was filling (in a multi-rank job, the process: see tandem::Run).
  virtual void sequence(Split split, int64_t step, int64_t sequence,
                        std::span<int32_t> tokens) const = 0;
};

}  // namespace tandem
