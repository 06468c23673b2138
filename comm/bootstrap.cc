// Launcher environment detection.
#include "comm/bootstrap.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <vector>

#include "runtime/core/errors.h"

namespace tandem::comm {

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::kOpenMpi:
      return "Open MPI";
    case Launcher::kSlurm:
      return "slurm";
    case Launcher::kTorchrun:
      return "torchrun";
    default:
      return "none";
  }
}

namespace {

struct VariableSet {
  Launcher launcher;
  std::vector<const char*> required;
  std::vector<const char*> optional;
};

const std::vector<VariableSet>& variable_sets() {
  static const std::vector<VariableSet> sets = {
      {Launcher::kOpenMpi,
       {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE"},
       {}},
      {Launcher::kTorchrun,
       {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
       {"MASTER_ADDR", "MASTER_PORT"}},
      {Launcher::kSlurm,
       {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID"},
       {"SLURM_STEP_ID", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
        "SLURM_NTASKS_PER_NODE", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST",
        "SLURM_STEP_RESV_PORTS", "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT"}},
  };
  return sets;
}

int to_int(const EnvironmentLookup& lookup, const char* name) {
  const char* text = lookup(name);
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  TANDEM_USER_CHECK(end != text && *end == '\0' && value >= 0 && value < (1l << 30),
                    "launcher variable ", name, "='", text, "' is not a non-negative integer");
  return static_cast<int>(value);
}

std::string listing(const VariableSet& set, const EnvironmentLookup& lookup);

// The first port of slurm's SLURM_STEP_RESV_PORTS ("12000-12003", "12000,12005" or "12000").
int first_reserved_port(const char* ports) {
  char* end = nullptr;
  const long port = std::strtol(ports, &end, 10);
  TANDEM_USER_CHECK(
      end != ports && (*end == '\0' || *end == '-' || *end == ',') && port > 0 && port < 65536,
      "cannot read a TCP port from SLURM_STEP_RESV_PORTS='", ports, "'");
  return static_cast<int>(port);
}

LaunchInfo read_set(const VariableSet& set, const EnvironmentLookup& lookup) {
  LaunchInfo info;
  info.launcher = set.launcher;
  const auto& r = set.required;
  info.rank = to_int(lookup, r[0]);
  info.world_size = to_int(lookup, r[1]);
  info.local_rank = to_int(lookup, r[2]);
  if (set.launcher == Launcher::kSlurm) {
    info.node_id = to_int(lookup, "SLURM_NODEID");
    // The step's own count first: inside an allocation, SLURM_NTASKS_PER_NODE is the
    // allocation's request (srun -n 1 in an allocation of 2 tasks per node still sees 2).
    if (const char* step = lookup("SLURM_STEP_TASKS_PER_NODE")) {
      info.local_size = slurm_tasks_on_node(step, info.node_id);
    } else if (const char* tasks = lookup("SLURM_TASKS_PER_NODE")) {
      info.local_size = slurm_tasks_on_node(tasks, info.node_id);
    } else if (lookup("SLURM_NTASKS_PER_NODE")) {
      info.local_size = to_int(lookup, "SLURM_NTASKS_PER_NODE");
    } else {
      TANDEM_USER_CHECK(false, "slurm environment without SLURM_STEP_TASKS_PER_NODE, ",
                        "SLURM_TASKS_PER_NODE or SLURM_NTASKS_PER_NODE: cannot tell how many ",
                        "ranks share this node");
    }
  } else {
    info.local_size = to_int(lookup, r[3]);
  }
  // Where the rendezvous store is: MASTER_ADDR/MASTER_PORT (torchrun requires them); under
  // slurm without them, see LaunchInfo::master_addr.
  std::string addr_source = "MASTER_ADDR", port_source = "MASTER_PORT";
  if (lookup("MASTER_ADDR")) info.master_addr = lookup("MASTER_ADDR");
  if (lookup("MASTER_PORT")) info.master_port = to_int(lookup, "MASTER_PORT");
  if (set.launcher == Launcher::kTorchrun) {
    TANDEM_USER_CHECK(!info.master_addr.empty() && info.master_port > 0,
                      "torchrun environment without MASTER_ADDR and MASTER_PORT: found\n",
                      listing(set, lookup), "set both to the address rank 0 can listen on");
  }
  if (set.launcher == Launcher::kSlurm) {
    // Task 0 runs on the first node of its step, which need not be the job's first node (srun
    // -N 2 -r 2 in an allocation of 4).
    for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"}) {
      if (!info.master_addr.empty() || !lookup(name)) continue;
      info.master_addr = first_slurm_host(lookup(name));
      addr_source = std::string("first of ") + name;
    }
    // Ports slurm reserved for this step are free on every node of it; a port derived from the
    // job id is only likely to be.
    if (info.master_port == 0 && lookup("SLURM_STEP_RESV_PORTS")) {
      info.master_port = first_reserved_port(lookup("SLURM_STEP_RESV_PORTS"));
      port_source = "first of SLURM_STEP_RESV_PORTS";
    } else if (info.master_port == 0 && lookup("SLURM_JOB_ID")) {
      info.master_port = 29500 + to_int(lookup, "SLURM_JOB_ID") % 1000;
      port_source = "29500 + SLURM_JOB_ID % 1000";
    }
  }
  if (!info.master_addr.empty())
    info.rendezvous_source = "host: " + addr_source + ", port: " + port_source;
  TANDEM_USER_CHECK(info.master_port >= 0 && info.master_port < 65536,
                    "MASTER_PORT=", info.master_port, " is not a TCP port");
  TANDEM_USER_CHECK(info.world_size >= 1 && info.rank < info.world_size,
                    launcher_name(set.launcher), " says rank ", info.rank, " of ", info.world_size,
                    ": the rank must be below the world size");
  TANDEM_USER_CHECK(info.local_size >= 1 && info.local_rank < info.local_size &&
                        info.local_size <= info.world_size,
                    launcher_name(set.launcher), " says local rank ", info.local_rank, " of ",
                    info.local_size, " on a node, in a world of ", info.world_size);
  return info;
}

std::string listing(const VariableSet& set, const EnvironmentLookup& lookup) {
  std::ostringstream out;
  for (const auto* names : {&set.required, &set.optional})
    for (const char* name : *names)
      out << "  " << name << "=" << (lookup(name) ? lookup(name) : "(unset)") << "\n";
  return out.str();
}

// Where the store listens and who serves it (LaunchInfo::store_port).
void read_store_port(const EnvironmentLookup& lookup, LaunchInfo& info) {
  info.store_port = info.master_port;
  const char* agent = lookup("TORCHELASTIC_USE_AGENT_STORE");
  // torchrun writes Python's str(True).
  info.torchrun_agent_store = agent && (std::string(agent) == "True" ||
                                        std::string(agent) == "true" || std::string(agent) == "1");
  if (const char* served = lookup("TANDEM_STORE_SERVED_BY_LAUNCHER"))
    info.store_served_by_launcher = std::string(served) == "1";
  if (lookup("TANDEM_STORE_PORT")) {
    info.store_port = to_int(lookup, "TANDEM_STORE_PORT");
    TANDEM_USER_CHECK(info.store_port >= 1 && info.store_port <= 65535,
                      "TANDEM_STORE_PORT=", info.store_port, " is not a TCP port (1 to 65535)");
    info.store_port_origin = "TANDEM_STORE_PORT";
  } else if (info.torchrun_agent_store && info.master_port > 0) {
    // torchrun's agent holds MASTER_PORT with its own store; tandem's goes next to it.
    TANDEM_USER_CHECK(info.master_port < 65535, "MASTER_PORT=", info.master_port,
                      " is held by torchrun's own store (TORCHELASTIC_USE_AGENT_STORE=", agent,
                      ") and MASTER_PORT + 1 is not a TCP port: set TANDEM_STORE_PORT to a free "
                      "port, the same on every rank");
    info.store_port = info.master_port + 1;
    info.store_port_origin = "MASTER_PORT + 1";
  }
}

// tandem-launch's heartbeat channel: all three variables or none.
void read_heartbeat(const EnvironmentLookup& lookup, LaunchInfo& info) {
  const char* names[] = {"TANDEM_HEARTBEAT_FD", "TANDEM_HEARTBEAT_INTERVAL_MS",
                         "TANDEM_HEARTBEAT_TIMEOUT_MS"};
  int present = 0;
  for (const char* name : names) present += lookup(name) != nullptr;
  if (present == 0) return;
  std::ostringstream found;
  for (const char* name : names)
    found << "  " << name << "=" << (lookup(name) ? lookup(name) : "(unset)") << "\n";
  TANDEM_USER_CHECK(present == 3, "partial tandem-launch heartbeat environment: found\n",
                    found.str(),
                    "tandem-launch sets all of them; unset them when starting tandem-train "
                    "another way");
  info.heartbeat_fd = to_int(lookup, names[0]);
  info.heartbeat_interval_ms = to_int(lookup, names[1]);
  info.heartbeat_timeout_ms = to_int(lookup, names[2]);
  TANDEM_USER_CHECK(
      info.heartbeat_interval_ms > 0 && info.heartbeat_timeout_ms > info.heartbeat_interval_ms,
      "tandem-launch heartbeat environment: the interval must be positive and below "
      "the timeout; found\n",
      found.str());
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  const size_t bracket = nodelist.find('['), comma = nodelist.find(',');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket))
    return nodelist.substr(0, comma);
  const size_t end = nodelist.find_first_of("-,]", bracket + 1);
  return nodelist.substr(0, bracket) + nodelist.substr(bracket + 1, end - bracket - 1);
}

int slurm_tasks_on_node(const std::string& tasks_per_node, int node_id) {
  std::stringstream in(tasks_per_node);
  int node = 0;
  for (std::string item; std::getline(in, item, ',');) {
    int count = 0, repeat = 1;
    char open = 0, x = 0;
    std::stringstream part(item);
    part >> count;
    TANDEM_USER_CHECK(!part.fail() && count > 0, "cannot parse SLURM_TASKS_PER_NODE='",
                      tasks_per_node, "'");
    if (part >> open) {
      part >> x >> repeat;
      TANDEM_USER_CHECK(open == '(' && x == 'x' && !part.fail() && repeat > 0,
                        "cannot parse SLURM_TASKS_PER_NODE='", tasks_per_node, "'");
    }
    if (node_id < node + repeat) return count;
    node += repeat;
  }
  TANDEM_USER_CHECK(false, "SLURM_TASKS_PER_NODE='", tasks_per_node, "' has no entry for node ",
                    node_id);
  return 0;
}

LaunchInfo detect_launch(const EnvironmentLookup& lookup) {
  const auto present = [&](const VariableSet& set) {
    int count = 0;
    for (const char* name : set.required) count += lookup(name) != nullptr;
    return count;
  };
  // Launchers run inside slurm jobs: mpirun in an allocation (its ranks inherit the batch
  // script's SLURM_PROCID=0 and the job's SLURM_NTASKS), tandem-launch or torchrun as the task of
  // an srun step. slurm's variables then describe the enclosing script or task, not this process,
  // so they give way — wholly, node id included — to Open MPI's (only Open MPI's launcher sets
  // them, for each process) and to torchrun's when a launcher of that convention set them (it
  // adds TANDEM_RESTART_COUNT or TORCHELASTIC_RUN_ID). Any other disagreement is refused below.
  bool nested_in_slurm = false;
  for (const auto& set : variable_sets()) {
    if (present(set) == 0) continue;
    nested_in_slurm |= set.launcher == Launcher::kOpenMpi ||
                       (set.launcher == Launcher::kTorchrun &&
                        (lookup("TANDEM_RESTART_COUNT") || lookup("TORCHELASTIC_RUN_ID")));
  }
  std::vector<LaunchInfo> found;
  std::vector<const VariableSet*> found_sets;
  for (const auto& set : variable_sets()) {
    const int count = present(set);
    if (count == 0 || (nested_in_slurm && set.launcher == Launcher::kSlurm)) continue;
    // slurm's variables describe a rank only in a task of an srun step (SLURM_STEP_ID is set). A
    // job's batch script and salloc's shell see some of them too (SLURM_PROCID=0, the job's
    // SLURM_NTASKS): one process started there runs alone; in a job of more tasks it would wait
    // for ranks that never come, so that is refused.
    if (set.launcher == Launcher::kSlurm && !lookup("SLURM_STEP_ID") && !lookup("SLURM_STEPID")) {
      const int tasks = lookup("SLURM_NTASKS") ? to_int(lookup, "SLURM_NTASKS") : 1;
      TANDEM_USER_CHECK(tasks <= 1,
                        "this is the environment of a slurm job's batch script or allocation "
                        "shell (SLURM_STEP_ID is unset), not of a task started by srun: found\n",
                        listing(set, lookup), "start the job's ", tasks,
                        " ranks with srun (srun tandem-train ...) or mpirun");
      continue;
    }
    TANDEM_USER_CHECK(count == static_cast<int>(set.required.size()), "partial ",
                      launcher_name(set.launcher), " environment: found\n", listing(set, lookup),
                      "set all of them or none");
    found.push_back(read_set(set, lookup));
    found_sets.push_back(&set);
  }
  for (size_t i = 1; i < found.size(); ++i) {
    if (found[i].rank == found[0].rank && found[i].world_size == found[0].world_size &&
        found[i].local_rank == found[0].local_rank && found[i].local_size == found[0].local_size)
      continue;
    TANDEM_USER_CHECK(false,
                      "contradictory launcher environment: ", launcher_name(found[0].launcher),
                      " and ", launcher_name(found[i].launcher), " disagree about this rank:\n",
                      listing(*found_sets[0], lookup), listing(*found_sets[i], lookup),
                      "unset the variables of the launcher that did not start this process");
  }
  // Keep what each launcher adds: slurm's node id, torchrun's rendezvous address.
  LaunchInfo info = found.empty() ? LaunchInfo{} : found[0];
  for (const auto& other : found) {
    if (other.node_id >= 0) info.node_id = other.node_id;
    if (!other.master_addr.empty()) {
      info.master_addr = other.master_addr;
      info.master_port = other.master_port;
      info.rendezvous_source = other.rendezvous_source;
    }
  }
  if (const char* run_id = lookup("TANDEM_RUN_ID"); run_id && *run_id) {
    info.run_id = run_id;
  } else if (const char* elastic = lookup("TORCHELASTIC_RUN_ID"); elastic && *elastic) {
    info.run_id = std::string("torchelastic-") + elastic;
  } else if (const char* job = lookup("SLURM_JOB_ID"); job && *job) {
    info.run_id = std::string("slurm-") + job;
  }
  TANDEM_USER_CHECK(info.run_id.find_first_of("/ \t\n") == std::string::npos, "TANDEM_RUN_ID='",
                    info.run_id,
                    "' must not contain '/' or white space (it names the job's store keys)");
  if (lookup("TANDEM_RESTART_COUNT")) {
    info.restart_count = to_int(lookup, "TANDEM_RESTART_COUNT");
  } else if (lookup("SLURM_RESTART_COUNT")) {
    info.restart_count = to_int(lookup, "SLURM_RESTART_COUNT");
  }
  if (const char* token = lookup("TANDEM_STORE_TOKEN")) info.store_token = token;
  read_store_port(lookup, info);
  read_heartbeat(lookup, info);
  if (lookup("TANDEM_METRICS_FD")) info.metrics_fd = to_int(lookup, "TANDEM_METRICS_FD");
  return info;
}

std::string LaunchInfo::store_host_description() const {
  if (!store_served_by_launcher) return "rank 0";
  return "tandem-launch on " + master_addr + ":" + std::to_string(store_port);
}

std::string LaunchInfo::store_namespace() const {
  return "tandem/" + run_id + "/attempt" + std::to_string(restart_count) + "/";
}

const LaunchInfo& detect_launch() {
  // Computed once and never changed: the environment a process was started with.
  static const LaunchInfo info =
      detect_launch([](const char* name) -> const char* { return std::getenv(name); });
  return info;
}

int64_t node_identity_hash() {
  return static_cast<int64_t>(std::hash<std::string>{}(node_identity()));
}

bool process_exited(long pid) {
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

const std::string& node_identity() {
  static const std::string identity = [] {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::string boot;
    std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
    char ns[128] = {};
    const ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    return std::string(host) + '|' + boot + '|' + (n > 0 ? std::string(ns, n) : std::string());
  }();
  return identity;
}

}  // namespace tandem::comm
