// Who am I: a rank learns its place in the job from whatever started it — Open MPI's mpirun
// (OMPI_COMM_WORLD_*), slurm's srun (SLURM_*), or the torchrun convention (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). A partial set of variables, or two
// launchers that disagree, is refused with a message listing everything found; but slurm's
// variables, which every process of a slurm job inherits, give way to those of a launcher
// started inside the job (mpirun in an allocation, tandem-launch as an srun task), and count
// only in a task srun started (a job's batch script is no rank). Everything else that depends on
// the launcher — ranks per node (for thread counts), which node this is (for the topology and
// shared memory), the store's port, namespace and token and who serves it, tandem-launch's
// heartbeat channel — is computed here and only here.
#pragma once

#include <functional>
#include <string>

namespace tandem::comm {

enum class Launcher { kNone, kOpenMpi, kSlurm, kTorchrun };
const char* launcher_name(Launcher launcher);

struct LaunchInfo {
  Launcher launcher = Launcher::kNone;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  int node_id = -1;  // slurm only; otherwise derived from hostnames (topology)
  // Where the rendezvous store is served (by rank 0): MASTER_ADDR and MASTER_PORT when set
  // (torchrun requires them); under slurm without them, task 0's node — the first of the step's
  // nodes, SLURM_STEP_NODELIST (else the job's) — on the first port slurm reserved for the step
  // (SLURM_STEP_RESV_PORTS, where the cluster sets MpiParams=ports=...), else 29500 +
  // SLURM_JOB_ID % 1000. `rendezvous_source` says which, for the log.
  std::string master_addr;
  int master_port = 0;
  std::string rendezvous_source;
  // Which job and which attempt of it (tandem-launch sets TANDEM_RUN_ID and
  // TANDEM_RESTART_COUNT; slurm's job id and SLURM_RESTART_COUNT, the times slurm requeued the
  // job, otherwise; else "job", attempt 0): store keys live under store_namespace(), so a
  // restarted job never reads a key of an earlier attempt.
  std::string run_id = "job";
  int restart_count = 0;
  std::string store_token;  // TANDEM_STORE_TOKEN: the shared secret a store client must present
  std::string store_namespace() const;
  // The store listens on master_addr:store_port: MASTER_PORT, unless TANDEM_STORE_PORT names
  // another port, or torchrun's agent already serves its own store on MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True, torchrun >= 2): then MASTER_PORT + 1. Every rank
  // computes the same. store_port_origin says which rule gave the port, for the messages.
  int store_port = 0;
  std::string store_port_origin = "MASTER_PORT";
  bool torchrun_agent_store = false;
  // TANDEM_STORE_SERVED_BY_LAUNCHER=1: tandem-launch serves the store for the whole run, so no
  // rank serves one (and a store that stops answering is the launcher's, not rank 0's).
  bool store_served_by_launcher = false;
  // Who serves the store, for messages: "rank 0" or "tandem-launch on HOST:PORT".
  std::string store_host_description() const;
  // tandem-launch's heartbeat channel (TANDEM_HEARTBEAT_FD, TANDEM_HEARTBEAT_INTERVAL_MS,
  // TANDEM_HEARTBEAT_TIMEOUT_MS): a socket this process writes a byte to every interval; past the
  // timeout without one the launcher calls the rank frozen. -1 and 0: no launcher heartbeat.
  int heartbeat_fd = -1;
  int heartbeat_interval_ms = 0;
  int heartbeat_timeout_ms = 0;
  // tandem-launch's metrics channel (TANDEM_METRICS_FD): a socket over which the rank hands its
  // node's launcher its exposition and /status page (monitoring/metrics_relay.h) instead of
  // binding a port of its own. -1: none.
  int metrics_fd = -1;
};

using EnvironmentLookup = std::function<const char*(const char*)>;

// Reads the launcher variables through `lookup` (std::getenv by default; tests pass a map).
LaunchInfo detect_launch(const EnvironmentLookup& lookup);
// This process's launch, read from the environment once (later calls return the same).
const LaunchInfo& detect_launch();

// What makes two processes "on the same node" for tandem: the hostname (a UTS namespace counts as
// a host of its own), the boot id and the pid namespace (only then can they map each other's
// memory through /proc/<pid>). The same text on every rank of a node.
const std::string& node_identity();
// 64 bits of it, for exchanging among ranks (two nodes alike by chance: a 2^-64 event).
int64_t node_identity_hash();

// Whether process `pid` of this node has exited (false while it runs or when it cannot be told).
bool process_exited(long pid);

// Tasks on node `node_id` from slurm's SLURM_TASKS_PER_NODE syntax, e.g. "4(x2),3" → 4, 4, 3.
int slurm_tasks_on_node(const std::string& tasks_per_node, int node_id);
// The first host of a slurm node list: "node[03-05,7],gpu1" → "node03".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace tandem::comm
