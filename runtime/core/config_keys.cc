// The one place where every configuration key is named and documented. Defaults are the member
// initialisers in config.h; `tandem-train --config-reference` prints this table as Markdown.
#include "runtime/core/config.h"

namespace tandem {

#define TANDEM_KEY(section, key, doc)                                                   \
  ConfigKey {                                                                           \
#section "." #key, doc, [](Config & c) { return config_value_ref(&c.section.key); } \
  }

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = {
      TANDEM_KEY(model, vocab_size, "Vocabulary size; 256 for the byte-level tokenizer."),
      TANDEM_KEY(model, seq_len, "Tokens per training sequence (context length)."),
      TANDEM_KEY(model, d_model, "Hidden size of the residual stream."),
      TANDEM_KEY(model, n_layers, "Transformer layers in total (dense + MoE)."),
      TANDEM_KEY(model, n_dense_layers,
                 "Leading layers with a dense SwiGLU FFN; the rest are MoE."),
      TANDEM_KEY(model, n_heads, "Attention heads; must divide d_model, head size must be even."),
      TANDEM_KEY(model, d_ff, "Hidden size of the dense layers' SwiGLU FFN."),
      TANDEM_KEY(model, n_routed_experts, "Routed experts per MoE layer."),
      TANDEM_KEY(model, n_shared_experts, "Shared experts per MoE layer (every token uses them)."),
      TANDEM_KEY(model, top_k, "Routed experts chosen per token (no capacity limit, no drops)."),
      TANDEM_KEY(model, d_expert, "Hidden size of each expert's SwiGLU FFN (shared and routed)."),
      TANDEM_KEY(model, n_expert_groups,
                 "Routed experts form this many equal contiguous groups (DeepSeek-V3's n_group); "
                 "with expert parallelism over nodes, one group per node."),
      TANDEM_KEY(model, max_groups_per_token,
                 "Node-limited routing (DeepSeek-V3's topk_group, 4 of 8 nodes): each token picks "
                 "the groups with the highest sums of their top-2 scores, then its top-k inside "
                 "them; 0 = no limit."),
      TANDEM_KEY(model, rope_theta, "Base of the rotary position embedding frequencies."),
      TANDEM_KEY(model, norm_eps, "Epsilon inside RMSNorm's square root."),
      TANDEM_KEY(model, init_std, "Standard deviation of the normal weight initialisation."),
      TANDEM_KEY(model, router_bias_update_rate,
                 "Aux-loss-free balancing: step of the per-expert selection bias (gamma)."),
      TANDEM_KEY(model, dtype, "Parameter and activation dtype on the CPU path: fp32 or fp64."),
      TANDEM_KEY(train, steps, "Optimizer steps to run."),
      TANDEM_KEY(train, batch_size, "Global batch in sequences per step."),
      TANDEM_KEY(train, seed, "Seed of initialisation and data sampling."),
      TANDEM_KEY(train, eval_interval, "Steps between held-out evaluations (0: only at the end)."),
      TANDEM_KEY(train, eval_batches, "Batches of batch_size sequences per held-out evaluation."),
      TANDEM_KEY(train, threads,
                 "CPU threads per rank; 0 = cores available divided by ranks on this node."),
      TANDEM_KEY(train, warmup_steps, "Linear learning-rate warmup steps."),
      TANDEM_KEY(train, lr, "Peak learning rate (after warmup)."),
      TANDEM_KEY(train, min_lr, "Learning rate at the end of the cosine decay."),
      TANDEM_KEY(train, weight_decay, "AdamW decoupled weight decay (matrices only)."),
      TANDEM_KEY(train, beta1, "AdamW first-moment decay."),
      TANDEM_KEY(train, beta2, "AdamW second-moment decay."),
      TANDEM_KEY(train, adam_eps, "AdamW epsilon."),
      TANDEM_KEY(train, grad_clip, "Clip the global gradient norm to this value (0: off)."),
      TANDEM_KEY(data, format,
                 "\"text\": bytes of a text file are the tokens; \"uint16\": nanoGPT token files."),
      TANDEM_KEY(data, path,
                 "Text corpus (format text) or training token file (format uint16); relative "
                 "paths are relative to the working directory."),
      TANDEM_KEY(data, val_path, "Held-out token file (format uint16 only)."),
      TANDEM_KEY(data, val_fraction,
                 "Fraction at the end of the text corpus held out for evaluation (format text)."),
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
      TANDEM_KEY(comm, timeout_s,
                 "Watchdog deadline of every collective and send/recv, in seconds; past it the job "
                 "stops naming the operation and the ranks that never arrived."),
      TANDEM_KEY(comm, flight_record_dir,
                 "Where each rank writes its flight record (its last operations on every group) "
                 "when a wait passes comm.timeout_s; empty: the launcher's log directory "
                 "(TANDEM_LOG_DIR) when there is one, else the working directory."),
      TANDEM_KEY(comm, node_collectives,
                 "UCX backend: large all-reduces, reduce-scatters and all-gathers of a group whose "
                 "ranks share a node move through the node's shared memory (true), or as ring "
                 "messages, as between nodes (false)."),
      TANDEM_KEY(comm, ranks_per_node,
                 "0: nodes from hostnames; > 0: treat every that many consecutive ranks as a node "
                 "(to test node-aware communication on one machine)."),
      TANDEM_KEY(parallel, pp,
                 "Pipeline-parallel ranks; data parallelism dp = world size / pp. DualPipe needs "
                 "an even pp."),
      TANDEM_KEY(parallel, ep,
                 "Expert-parallel group size inside each stage: each group of ep data-parallel "
                 "ranks splits the routed experts; must divide dp and model.n_routed_experts."),
      TANDEM_KEY(parallel, schedule,
                 "Pipeline schedule: \"1f1b\", \"zb-h1\" (zero bubble), \"dualpipe\" (rank r "
                 "holds stages r and pp-1-r) or \"dualpipev\" (2*pp stages in a V)."),
      TANDEM_KEY(parallel, microbatches,
                 "Micro-batches per data-parallel rank and step; train.batch_size must divide by "
                 "dp * microbatches. DualPipe and DualPipeV need at least 2*pp (DualPipe: even)."),
      TANDEM_KEY(parallel, zero1,
                 "Shard the optimizer state over the data-parallel replicas (reduce-scatter the "
                 "gradients, update the shard, all-gather the parameters)."),
      TANDEM_KEY(parallel, overlap,
                 "Interleave each overlapped F&B pair at sub-layer granularity, so that one "
                 "micro-batch's all-to-all runs while the other computes (false: one after the "
                 "other, for comparison)."),
  };
  return keys;
}

#undef TANDEM_KEY

}  // namespace tandem
