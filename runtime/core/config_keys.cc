// The one place where every configuration key is named and documented. Defaults are the member
// initialisers in config.h; `tandem-train --config-reference` prints this table as Markdown.
#include "runtime/core/config.h"

namespace tandem {

// A numeric key and the values it accepts (a ValueRange), and a key of any type without one.
#define TANDEM_KEY_IN(section, key, range, doc)                                                \
  ConfigKey {                                                                                  \
#section "." #key, doc, [](Config & c) { return config_value_ref(&c.section.key); }, range \
  }
#define TANDEM_KEY(section, key, doc) TANDEM_KEY_IN(section, key, std::nullopt, doc)

const std::vector<ConfigKey>& config_keys() {
  using R = ValueRange;
  constexpr double k2e24 = 1 << 24, k2e31 = 2147483648.0, k2e40 = 1099511627776.0;
  static const std::vector<ConfigKey> keys = {
      TANDEM_KEY_IN(model, vocab_size, R::closed(1, k2e31),
                    "Vocabulary size; 256 for the byte-level tokenizer. At most 2^31: token ids "
                    "are int32."),
      TANDEM_KEY_IN(model, seq_len, R::at_least(1),
                    "Tokens per training sequence (context length)."),
      TANDEM_KEY_IN(model, d_model, R::at_least(1), "Hidden size of the residual stream."),
      TANDEM_KEY_IN(model, n_layers, R::at_least(1), "Transformer layers in total (dense + MoE)."),
      TANDEM_KEY_IN(model, n_dense_layers, R::at_least(0),
                    "Leading layers with a dense SwiGLU FFN (at most n_layers); the rest are MoE."),
      TANDEM_KEY_IN(model, n_heads, R::at_least(1),
                    "Attention heads; must divide d_model, head size must be even."),
      TANDEM_KEY_IN(model, d_ff, R::at_least(1), "Hidden size of the dense layers' SwiGLU FFN."),
      TANDEM_KEY(model, n_routed_experts, "Routed experts per MoE layer."),
      TANDEM_KEY_IN(model, n_shared_experts, R::at_least(0),
                    "Shared experts per MoE layer (every token uses them)."),
      TANDEM_KEY(model, top_k, "Routed experts chosen per token (no capacity limit, no drops)."),
      TANDEM_KEY_IN(model, d_expert, R::at_least(1),
                    "Hidden size of each expert's SwiGLU FFN (shared and routed)."),
      TANDEM_KEY(model, n_expert_groups,
                 "Routed experts form this many equal contiguous groups (DeepSeek-V3's n_group); "
                 "with expert parallelism over nodes, one group per node."),
      TANDEM_KEY(model, max_groups_per_token,
                 "Node-limited routing (DeepSeek-V3's topk_group, 4 of 8 nodes): each token picks "
                 "the groups with the highest sums of their top-2 scores, then its top-k inside "
                 "them; 0 = no limit."),
      TANDEM_KEY_IN(model, rope_theta, R::left_open(1, 1e9),
                    "Base of the rotary position embedding frequencies (10000 in the original "
                    "RoPE, 500000 in Llama 3)."),
      TANDEM_KEY_IN(model, norm_eps, R::left_open(0, 0.1),
                    "Epsilon inside RMSNorm's square root; larger values would drown the "
                    "activations' own scale."),
      TANDEM_KEY_IN(model, init_std, R::left_open(0, 1),
                    "Standard deviation of the normal weight initialisation."),
      TANDEM_KEY_IN(model, router_bias_update_rate, R::closed(0, 1),
                    "Aux-loss-free balancing: step of the per-expert selection bias (gamma; "
                    "DeepSeek-V3 uses 0.001); 0 turns the balancing off. Router scores are in "
                    "(0, 1), so a larger step would only overshoot."),
      TANDEM_KEY(model, dtype,
                 "Parameter and activation dtype: fp32, or fp64 on the CPU (gradient checks)."),
      TANDEM_KEY_IN(train, steps, R::closed(1, k2e40),
                    "Optimizer steps to run. At most 2^40: the batch number takes 40 bits of the "
                    "sampling index."),
      TANDEM_KEY_IN(train, batch_size, R::closed(1, k2e24),
                    "Global batch in sequences per step. At most 2^24: a sequence's number in its "
                    "batch takes the other 24 bits of the sampling index."),
      TANDEM_KEY(train, seed, "Seed of initialisation and data sampling."),
      TANDEM_KEY_IN(train, eval_interval, R::at_least(0),
                    "Steps between held-out evaluations (0: only at the end)."),
      TANDEM_KEY_IN(train, eval_batches, R::closed(1, k2e40),
                    "Batches of batch_size sequences per held-out evaluation."),
      TANDEM_KEY_IN(train, log_interval, R::at_least(0),
                    "Steps between the step lines printed on the console (the first and last "
                    "steps, every evaluation and a stop are always printed; --log-jsonl records "
                    "every step regardless). 0: ceil(train.steps / 100), about a hundred lines a "
                    "run."),
      TANDEM_KEY(train, device,
                 "Where the training step runs: \"cpu\" (the reference) or \"cuda\" (one GPU "
                 "per rank: a lone process's first visible one, else its local rank's on its "
                 "node; pipeline messages, the expert dispatch and the reductions on NCCL, the "
                 "expert rows as messages (comm.dispatch = \"flat\"); fp32 master weights, FP8 "
                 "on Hopper). \"cuda\" needs a build with CUDA and a usable GPU, and is refused "
                 "(exit 2, saying what is missing) where either lacks: never "
                 "a silent fallback to the CPU."),
      TANDEM_KEY_IN(train, threads, R::closed(0, 1024),
                    "CPU threads per rank; 0 = cores available divided by ranks on this node."),
      TANDEM_KEY_IN(train, warmup_steps, R::at_least(0), "Linear learning-rate warmup steps."),
      TANDEM_KEY_IN(train, lr, R::left_open(0, 1), "Peak learning rate (after warmup)."),
      TANDEM_KEY_IN(train, min_lr, R::closed(0, 1),
                    "Learning rate at the end of the cosine decay; at most train.lr."),
      TANDEM_KEY_IN(train, weight_decay, R::closed(0, 1),
                    "AdamW decoupled weight decay (matrices only); with lr <= 1 a step never "
                    "shrinks a weight past zero."),
      TANDEM_KEY_IN(train, beta1, R::right_open(0, 1), "AdamW first-moment decay."),
      TANDEM_KEY_IN(train, beta2, R::right_open(0, 1), "AdamW second-moment decay."),
      TANDEM_KEY_IN(train, adam_eps, R::left_open(0, 1),
                    "AdamW epsilon, added to the root of the second moment."),
      TANDEM_KEY_IN(train, grad_clip, R::closed(0, 1000),
                    "Clip the global gradient norm to this value (0: off)."),
      TANDEM_KEY(data, format,
                 "\"text\": bytes of a text file are the tokens; \"uint16\": nanoGPT token files."),
      TANDEM_KEY(data, path,
                 "Text corpus (format text) or training token file (format uint16); relative "
                 "paths are relative to the working directory."),
      TANDEM_KEY(data, val_path,
                 "Held-out file: nanoGPT's val.bin for format uint16 (required); for format text "
                 "optional: a text file whose bytes are held out, and then data.path is trained on "
                 "whole."),
      TANDEM_KEY_IN(data, val_fraction, R::open(0, 1),
                    "Fraction at the end of the text corpus held out for evaluation (format text "
                    "without data.val_path)."),
      TANDEM_KEY(fp8, enabled,
                 "Run the FFN linear layers (dense, shared and routed experts) in FP8: inputs "
                 "1x128-scaled, weights 128x128-scaled, FP32 accumulation promoted every 128 of K, "
                 "for forward, dgrad and wgrad; inputs cached in FP8 for the backward."),
      TANDEM_KEY(fp8, attention, "Also run the attention projections (qkv, out) in FP8."),
      TANDEM_KEY(fp8, power_of_two_scales, "Round every FP8 scale up to a power of two."),
      TANDEM_KEY(fp8, format,
                 "FP8 format of all GEMM inputs: \"e4m3\" (as DeepSeek-V3) or \"e5m2\"."),
      TANDEM_KEY(comm, world,
                 "Backend of the world group: \"auto\" (MPI under mpirun, UCX when started the "
                 "torchrun or slurm way), \"mpi\" or \"ucx\". Used by multi-rank runs."),
      TANDEM_KEY(
          comm, pipeline,
          "Backend of pipeline send/recv: \"auto\" (MPI on CPU when the job has it, else UCX; "
          "NCCL on GPU), \"mpi\", "
          "\"ucx\" or \"nccl\"."),
      TANDEM_KEY(comm, expert,
                 "Backend of the expert all-to-all: \"auto\" (MPI on CPU when the job has it, else "
                 "UCX; NCCL on GPU), \"mpi\", "
                 "\"ucx\" or \"nccl\"."),
      TANDEM_KEY(
          comm, data,
          "Backend of data-parallel reductions: \"auto\" (MPI on CPU when the job has it, else "
          "UCX; NCCL on GPU), \"mpi\", "
          "\"ucx\" or \"nccl\"."),
      TANDEM_KEY(comm, dispatch,
                 "Expert dispatch: \"flat\" (one all-to-all) or \"hierarchical\" (once per "
                 "destination node over the rail, then inside the node)."),
      TANDEM_KEY(comm, expert_exchange,
                 "How expert rows move between the ranks of one node (the flat dispatch, whose "
                 "expert group must then be on one node, or the hierarchical dispatch's fan-out "
                 "inside each node): \"shared_memory\" (written and read in place in the other "
                 "ranks' memory: one copy per byte, no permuted copy, the weighted sum formed "
                 "while reading), \"messages\" (over comm.expert's backend), or \"auto\" "
                 "(shared memory on CPU where the ranks can map each other's memory, else "
                 "messages; the choice and its reason are logged)."),
      TANDEM_KEY_IN(comm, timeout_s, R::closed(0.01, 86400),
                    "Watchdog deadline of every collective and send/recv, in seconds (at most a "
                    "day); past it the job stops naming the operation and the ranks that never "
                    "arrived."),
      TANDEM_KEY_IN(comm, rendezvous_timeout_s, R::closed(0.01, 86400),
                    "How long a rank waits to join the job, in seconds: to reach the rendezvous "
                    "store and for every peer's address (ranks may start minutes apart). Must be "
                    "above comm.timeout_s and above tandem-launch's --heartbeat-timeout-s: "
                    "tandem-train refuses a configuration where it is not."),
      TANDEM_KEY(comm, flight_record_dir,
                 "Where each rank writes its flight record (its last operations on every group) "
                 "when a wait passes comm.timeout_s; empty: the launcher's log directory "
                 "(TANDEM_LOG_DIR) when there is one, else the working directory."),
      TANDEM_KEY(comm, node_collectives,
                 "UCX backend: large all-reduces, reduce-scatters and all-gathers of a group whose "
                 "ranks share a node move through the node's shared memory (true), or as ring "
                 "messages, as between nodes (false)."),
      TANDEM_KEY_IN(comm, ranks_per_node, R::closed(0, 1 << 20),
                    "0: nodes from hostnames; > 0: treat every that many consecutive ranks as a "
                    "node (to test node-aware communication on one machine)."),
      TANDEM_KEY_IN(parallel, pp, R::at_least(1),
                    "Pipeline-parallel ranks; data parallelism dp = world size / pp. DualPipe "
                    "needs an even pp."),
      TANDEM_KEY_IN(parallel, ep, R::at_least(1),
                    "Expert-parallel group size inside each stage: each group of ep data-parallel "
                    "ranks splits the routed experts; must divide dp and model.n_routed_experts."),
      TANDEM_KEY(parallel, schedule,
                 "Pipeline schedule: \"1f1b\", \"zb-h1\" (zero bubble), \"dualpipe\" (rank r "
                 "holds stages r and pp-1-r) or \"dualpipev\" (2*pp stages in a V)."),
      TANDEM_KEY_IN(
          parallel, microbatches, R::at_least(1),
          "Micro-batches per data-parallel rank and step; train.batch_size must divide by "
          "dp * microbatches. DualPipe and DualPipeV need at least 2*pp (DualPipe: even)."),
      TANDEM_KEY(parallel, zero1,
                 "Shard the optimizer state over the data-parallel replicas (reduce-scatter the "
                 "gradients, update the shard, all-gather the parameters)."),
      TANDEM_KEY(parallel, overlap,
                 "Interleave each overlapped F&B pair at sub-layer granularity, so that one "
                 "micro-batch's all-to-all runs while the other computes (false: one after the "
                 "other, for comparison)."),
      TANDEM_KEY(checkpoint, dir,
                 "Directory of the run's checkpoints (one step-NNNNNNNN/ directory each: a "
                 "safetensors shard per rank and a manifest); empty: no checkpoints. In a "
                 "multi-node job every node must see the same directory (a shared filesystem): "
                 "this is checked at startup."),
      TANDEM_KEY_IN(checkpoint, interval, R::closed(0, k2e40),
                    "Steps between checkpoints; 0: only after the last step (and on SIGTERM). "
                    "Used when checkpoint.dir is set."),
      TANDEM_KEY_IN(checkpoint, keep, R::closed(1, 1000000),
                    "Complete checkpoints kept; older ones are removed once a newer one is "
                    "complete."),
      TANDEM_KEY(checkpoint, async,
                 "Write checkpoints from a background thread after copying the state to host "
                 "buffers (the step goes on), or in the step itself (false)."),
      TANDEM_KEY_IN(control, port, R::closed(0, 65535),
                    "TCP port of the gRPC control service (status, watch, pause, resume, "
                    "checkpoint, set-lr, stop: tandemctl), served by rank 0; 0 = off. tandemctl "
                    "uses 29600 unless given --addr."),
      TANDEM_KEY(control, bind,
                 "Address the control service listens on: 127.0.0.1 (this machine only), or "
                 "another of this machine's addresses, or 0.0.0.0 (every interface: then anyone "
                 "who can reach it and holds the token can steer the job)."),
      TANDEM_KEY(control, token_file,
                 "File holding the token that commands must present (surrounding whitespace "
                 "stripped; it should be readable by its owner only). Empty: the token is "
                 "TANDEM_CONTROL_TOKEN, else a random one written to "
                 "~/.tandem/control-token-PORT (mode 0600), where tandemctl finds it."),
      TANDEM_KEY_IN(monitoring, metrics_port, R::closed(0, 65535),
                    "Prometheus metrics: each rank serves http://monitoring.bind:(metrics_port + "
                    "LOCAL_RANK)/metrics and /status (docs/metrics.md); under tandem-launch no "
                    "rank binds a port: each node's launcher serves one endpoint on "
                    "monitoring.bind:metrics_port with every local rank's series (rank-labelled), "
                    "kept up across restarts. 0 = off. A port that cannot be bound stops the job "
                    "at startup (exit 2, never restarted)."),
      TANDEM_KEY(monitoring, bind,
                 "IPv4 address the metrics endpoints listen on: 127.0.0.1 (this machine only) or "
                 "0.0.0.0 (every interface; the targets then name the host)."),
      TANDEM_KEY(monitoring, sd_file,
                 "Rank 0 writes a Prometheus file_sd targets file here at startup: every rank's "
                 "endpoint, labelled job, rank and node (monitoring/prometheus/prometheus.yml "
                 "reads it); under tandem-launch node 0's launcher writes it instead, one target "
                 "per node (labelled job and node), rewritten when a node's endpoint appears or "
                 "changes. Empty: none. Needs monitoring.metrics_port."),
      TANDEM_KEY(monitoring, job,
                 "The job label of the targets in monitoring.sd_file (the dashboard's job "
                 "variable)."),
      TANDEM_KEY_IN(monitoring, straggler_ratio, R::left_open(1, 100),
                    "A rank is named a straggler (log, tandemctl status, tandem_straggler) once "
                    "the median, over monitoring.straggler_window steps, of its compute time over "
                    "the other ranks' median compute time reaches this; it is cleared when that "
                    "median falls below halfway back to 1. Compute excludes waits on peers "
                    "(all-to-all, pipeline, gradient reduction)."),
      TANDEM_KEY_IN(monitoring, straggler_window, R::closed(1, 100000),
                    "Steps over which a rank's compute ratio is taken (its median): one noisy step "
                    "neither names nor clears a rank."),
  };
  return keys;
}

#undef TANDEM_KEY
#undef TANDEM_KEY_IN

}  // namespace tandem
