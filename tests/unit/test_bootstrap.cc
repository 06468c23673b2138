// Launcher environments (Open MPI, slurm, torchrun, tandem-launch's store and heartbeat), the order
// of the job's timeouts, and the TCP store.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "comm/bootstrap.h"
#include "comm/launcher_heartbeat.h"
#include "comm/store.h"
#include "comm/traffic.h"
#include "comm/world.h"
#include "tests/unit/error_text.h"

namespace tandem::comm {
namespace {

using testing::error_of;

struct FakeEnvironment {
  std::map<std::string, std::string> values;
  EnvironmentLookup lookup() const {
    return [this](const char* name) -> const char* {
      auto it = values.find(name);
      return it == values.end() ? nullptr : it->second.c_str();
    };
  }
};

TEST(Bootstrap, ReadsEachLauncher) {
  FakeEnvironment ompi{{{"OMPI_COMM_WORLD_RANK", "5"},
                        {"OMPI_COMM_WORLD_SIZE", "8"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}};
  LaunchInfo info = detect_launch(ompi.lookup());
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 4);

  FakeEnvironment torchrun{{{"RANK", "3"},
                            {"WORLD_SIZE", "4"},
                            {"LOCAL_RANK", "1"},
                            {"LOCAL_WORLD_SIZE", "2"},
                            {"MASTER_ADDR", "127.0.0.1"},
                            {"MASTER_PORT", "29500"}}};
  info = detect_launch(torchrun.lookup());
  EXPECT_EQ(info.launcher, Launcher::kTorchrun);
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.master_addr, "127.0.0.1");
  EXPECT_EQ(info.master_port, 29500);

  FakeEnvironment slurm{{{"SLURM_PROCID", "6"},
                         {"SLURM_NTASKS", "7"},
                         {"SLURM_LOCALID", "0"},
                         {"SLURM_NODEID", "2"},
                         {"SLURM_STEP_ID", "0"},
                         {"SLURM_TASKS_PER_NODE", "3(x2),1"},
                         {"SLURM_JOB_NODELIST", "n[1-3]"}}};
  info = detect_launch(slurm.lookup());
  EXPECT_EQ(info.launcher, Launcher::kSlurm);
  EXPECT_EQ(info.rank, 6);
  EXPECT_EQ(info.local_size, 1);
  EXPECT_EQ(info.node_id, 2);

  EXPECT_EQ(detect_launch(FakeEnvironment{}.lookup()).launcher, Launcher::kNone);
  // Ranks per node (what sizes each rank's thread pool) in slurm's compressed form.
  slurm.values["SLURM_TASKS_PER_NODE"] = "2(x3),1";
  slurm.values["SLURM_NODEID"] = "1";
  slurm.values["SLURM_PROCID"] = "3";
  EXPECT_EQ(detect_launch(slurm.lookup()).local_size, 2);
  slurm.values["SLURM_NODEID"] = "3";
  slurm.values["SLURM_PROCID"] = "6";
  EXPECT_EQ(detect_launch(slurm.lookup()).local_size, 1);
  EXPECT_EQ(detect_launch(slurm.lookup()).run_id, "job");
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 0), 4);
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 1), 4);
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 2), 3);
}

TEST(Bootstrap, RefusesPartialAndContradictoryEnvironments) {
  FakeEnvironment partial{{{"RANK", "0"}, {"WORLD_SIZE", "2"}}};
  std::string e = error_of([&] { detect_launch(partial.lookup()); });
  EXPECT_NE(e.find("partial torchrun environment"), std::string::npos) << e;
  EXPECT_NE(e.find("LOCAL_RANK=(unset)"), std::string::npos) << e;
  EXPECT_NE(e.find("MASTER_PORT=(unset)"), std::string::npos) << e;

  FakeEnvironment both{{{"OMPI_COMM_WORLD_RANK", "1"},
                        {"OMPI_COMM_WORLD_SIZE", "2"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                        {"RANK", "0"},
                        {"WORLD_SIZE", "2"},
                        {"LOCAL_RANK", "0"},
                        {"LOCAL_WORLD_SIZE", "2"},
                        {"MASTER_ADDR", "127.0.0.1"},
                        {"MASTER_PORT", "29500"}}};
  e = error_of([&] { detect_launch(both.lookup()); });
  EXPECT_NE(e.find("contradictory launcher environment: Open MPI and torchrun disagree"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("OMPI_COMM_WORLD_RANK=1"), std::string::npos) << e;
  EXPECT_NE(e.find("RANK=0"), std::string::npos) << e;

  FakeEnvironment bad{{{"RANK", "4"},
                       {"WORLD_SIZE", "4"},
                       {"LOCAL_RANK", "0"},
                       {"LOCAL_WORLD_SIZE", "1"},
                       {"MASTER_ADDR", "x"},
                       {"MASTER_PORT", "1"}}};
  EXPECT_NE(error_of([&] { detect_launch(bad.lookup()); }).find("rank 4 of 4"), std::string::npos);
  FakeEnvironment text{{{"OMPI_COMM_WORLD_RANK", "one"},
                        {"OMPI_COMM_WORLD_SIZE", "2"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}}};
  EXPECT_NE(error_of([&] {
              detect_launch(text.lookup());
            }).find("OMPI_COMM_WORLD_RANK='one' is not a non-negative integer"),
            std::string::npos);
}

TEST(Bootstrap, StoreNamespaceIsPerJobAndAttempt) {
  FakeEnvironment env{{{"RANK", "0"},
                       {"WORLD_SIZE", "2"},
                       {"LOCAL_RANK", "0"},
                       {"LOCAL_WORLD_SIZE", "2"},
                       {"MASTER_ADDR", "127.0.0.1"},
                       {"MASTER_PORT", "29500"}}};
  EXPECT_EQ(detect_launch(env.lookup()).store_namespace(), "tandem/job/attempt0/");
  env.values["TANDEM_RUN_ID"] = "exp7";
  env.values["TANDEM_RESTART_COUNT"] = "2";
  env.values["TANDEM_STORE_TOKEN"] = "s3cret";
  const LaunchInfo info = detect_launch(env.lookup());
  EXPECT_EQ(info.store_namespace(), "tandem/exp7/attempt2/");
  EXPECT_EQ(info.store_token, "s3cret");
  env.values["TANDEM_RESTART_COUNT"] = "-1";
  EXPECT_NE(error_of([&] {
              detect_launch(env.lookup());
            }).find("TANDEM_RESTART_COUNT='-1' is not a non-negative integer"),
            std::string::npos);
  env.values["TANDEM_RESTART_COUNT"] = "0";
  env.values["TANDEM_RUN_ID"] = "a/b";
  EXPECT_NE(error_of([&] { detect_launch(env.lookup()); }).find("TANDEM_RUN_ID='a/b'"),
            std::string::npos);
}

// What an srun task of step 0 of job 4242 sees, on the second of the step's two nodes.
FakeEnvironment slurm_task() {
  return {{{"SLURM_PROCID", "3"},
           {"SLURM_NTASKS", "4"},
           {"SLURM_LOCALID", "1"},
           {"SLURM_NODEID", "1"},
           {"SLURM_STEP_ID", "0"},
           {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"},
           {"SLURM_TASKS_PER_NODE", "2(x2)"},
           {"SLURM_STEP_NODELIST", "gpu[07-08]"},
           {"SLURM_JOB_NODELIST", "gpu[05-08]"},
           {"SLURM_JOB_ID", "4242"}}};
}

TEST(Bootstrap, SlurmRendezvousIsTheStepsFirstNode) {
  FakeEnvironment env = slurm_task();
  LaunchInfo info = detect_launch(env.lookup());
  // Task 0 runs on the first node of the step (here not the job's first node, gpu05).
  EXPECT_EQ(info.master_addr, "gpu07");
  EXPECT_EQ(info.master_port, 29500 + 4242 % 1000);
  EXPECT_EQ(info.rendezvous_source,
            "host: first of SLURM_STEP_NODELIST, port: 29500 + SLURM_JOB_ID % 1000");
  // Ports slurm reserved for the step (MpiParams=ports=...) are free on all its nodes.
  for (const char* ports : {"12007-12009", "12007,12011", "12007"}) {
    env.values["SLURM_STEP_RESV_PORTS"] = ports;
    info = detect_launch(env.lookup());
    EXPECT_EQ(info.master_port, 12007) << ports;
    EXPECT_EQ(info.rendezvous_source,
              "host: first of SLURM_STEP_NODELIST, port: first of SLURM_STEP_RESV_PORTS");
  }
  env.values["SLURM_STEP_RESV_PORTS"] = "ports";
  EXPECT_NE(error_of([&] {
              detect_launch(env.lookup());
            }).find("cannot read a TCP port from SLURM_STEP_RESV_PORTS='ports'"),
            std::string::npos);
  // The batch script's environment has only the job's list; MASTER_ADDR/PORT override both.
  env = slurm_task();
  env.values.erase("SLURM_STEP_NODELIST");
  EXPECT_EQ(detect_launch(env.lookup()).master_addr, "gpu05");
  env.values["MASTER_ADDR"] = "10.0.0.9";
  env.values["MASTER_PORT"] = "31000";
  info = detect_launch(env.lookup());
  EXPECT_EQ(info.master_addr, "10.0.0.9");
  EXPECT_EQ(info.master_port, 31000);
  EXPECT_EQ(info.rendezvous_source, "host: MASTER_ADDR, port: MASTER_PORT");
  EXPECT_EQ(first_slurm_host("node-[3-5]"), "node-3");
  EXPECT_EQ(first_slurm_host("login1,node[001-004]"), "login1");
  EXPECT_EQ(first_slurm_host("node[9,2-3],gpu1"), "node9");
}

TEST(Bootstrap, SlurmRanksPerNodeAreTheSteps) {
  // srun -n 1 in an allocation of 2 tasks per node: SLURM_NTASKS_PER_NODE is the allocation's.
  FakeEnvironment env{{{"SLURM_PROCID", "0"},
                       {"SLURM_NTASKS", "1"},
                       {"SLURM_LOCALID", "0"},
                       {"SLURM_NODEID", "0"},
                       {"SLURM_STEP_ID", "1"},
                       {"SLURM_NTASKS_PER_NODE", "2"},
                       {"SLURM_TASKS_PER_NODE", "1"},
                       {"SLURM_STEP_TASKS_PER_NODE", "1"},
                       {"SLURM_JOB_NODELIST", "localhost"}}};
  EXPECT_EQ(detect_launch(env.lookup()).local_size, 1);
  env.values.erase("SLURM_STEP_TASKS_PER_NODE");
  EXPECT_EQ(detect_launch(env.lookup()).local_size, 1);
  // SLURM_NTASKS_PER_NODE only where neither count is there.
  env.values.erase("SLURM_TASKS_PER_NODE");
  env.values["SLURM_NTASKS"] = "2";
  EXPECT_EQ(detect_launch(env.lookup()).local_size, 2);
}

TEST(Bootstrap, SlurmBatchScriptIsNoRank) {
  // The batch script of a job: SLURM_PROCID=0 but no step. Alone it is a single process...
  FakeEnvironment batch{{{"SLURM_PROCID", "0"},
                         {"SLURM_LOCALID", "0"},
                         {"SLURM_NODEID", "0"},
                         {"SLURM_TASKS_PER_NODE", "1"},
                         {"SLURM_JOB_NODELIST", "localhost"},
                         {"SLURM_JOB_ID", "118"},
                         {"SLURM_RESTART_COUNT", "2"}}};
  LaunchInfo info = detect_launch(batch.lookup());
  EXPECT_EQ(info.launcher, Launcher::kNone);
  EXPECT_EQ(info.world_size, 1);
  // ...of the job's slurm attempt (a requeued job runs again under the same id).
  EXPECT_EQ(info.store_namespace(), "tandem/slurm-118/attempt2/");
  // ...and in a job of 2 tasks it would wait for a rank 1 that never comes.
  batch.values["SLURM_NTASKS"] = "2";
  std::string e = error_of([&] { detect_launch(batch.lookup()); });
  EXPECT_NE(e.find("environment of a slurm job's batch script or allocation shell"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("start the job's 2 ranks with srun"), std::string::npos) << e;
  // salloc's shell has only SLURM_NTASKS: the same, not a "partial" environment.
  FakeEnvironment salloc{{{"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "117"}}};
  e = error_of([&] { detect_launch(salloc.lookup()); });
  EXPECT_NE(e.find("start the job's 2 ranks with srun"), std::string::npos) << e;
  salloc.values["SLURM_NTASKS"] = "1";
  EXPECT_EQ(detect_launch(salloc.lookup()).launcher, Launcher::kNone);
}

TEST(Bootstrap, LaunchersInsideASlurmJob) {
  // mpirun in a batch script: every rank inherits the script's SLURM_PROCID=0 and the job's
  // SLURM_NTASKS; Open MPI's variables describe the rank, slurm's (node id too) are ignored.
  FakeEnvironment mpirun{{{"OMPI_COMM_WORLD_RANK", "1"},
                          {"OMPI_COMM_WORLD_SIZE", "2"},
                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                          {"SLURM_PROCID", "0"},
                          {"SLURM_NTASKS", "2"},
                          {"SLURM_LOCALID", "0"},
                          {"SLURM_NODEID", "0"},
                          {"SLURM_TASKS_PER_NODE", "2"},
                          {"SLURM_JOB_NODELIST", "localhost"},
                          {"SLURM_JOB_ID", "116"}}};
  LaunchInfo info = detect_launch(mpirun.lookup());
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.local_size, 2);
  EXPECT_EQ(info.node_id, -1);
  EXPECT_TRUE(info.master_addr.empty());
  // ...and in salloc's shell, whose slurm variables are partial.
  for (const char* name : {"SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID"})
    mpirun.values.erase(name);
  EXPECT_EQ(detect_launch(mpirun.lookup()).rank, 1);

  // tandem-launch (or torchrun) as an srun task: its ranks carry the task's slurm variables.
  FakeEnvironment launched = slurm_task();
  launched.values.insert({{"RANK", "5"},
                          {"WORLD_SIZE", "8"},
                          {"LOCAL_RANK", "1"},
                          {"LOCAL_WORLD_SIZE", "4"},
                          {"MASTER_ADDR", "gpu07"},
                          {"MASTER_PORT", "29500"},
                          {"TANDEM_RESTART_COUNT", "0"}});
  info = detect_launch(launched.lookup());
  EXPECT_EQ(info.launcher, Launcher::kTorchrun);
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.local_size, 4);
  EXPECT_EQ(info.node_id, -1);
  launched.values.erase("TANDEM_RESTART_COUNT");
  launched.values["TORCHELASTIC_RUN_ID"] = "r1";
  EXPECT_EQ(detect_launch(launched.lookup()).rank, 5);
  // Without a launcher's mark the torchrun variables may be stale exports: still refused.
  launched.values.erase("TORCHELASTIC_RUN_ID");
  const std::string e = error_of([&] { detect_launch(launched.lookup()); });
  EXPECT_NE(e.find("contradictory launcher environment: torchrun and slurm disagree"),
            std::string::npos)
      << e;
}

TEST(Traffic, AutoPicksByDeviceAndConfiguredBackendsAreChecked) {
  CommConfig config;
  using enum CommBackend;
  EXPECT_EQ(backend_for(Traffic::kPipeline, config, DeviceType::kCPU, true), kMpi);
  EXPECT_EQ(backend_for(Traffic::kPipeline, config, DeviceType::kCPU, false), kUcx);
  EXPECT_EQ(backend_for(Traffic::kExpert, config, DeviceType::kCPU, true), kMpi);
  EXPECT_EQ(backend_for(Traffic::kData, config, DeviceType::kCPU, false), kUcx);
  EXPECT_EQ(backend_for(Traffic::kExpert, config, DeviceType::kCUDA, true), kNccl);
  config.pipeline = kUcx;
  EXPECT_EQ(backend_for(Traffic::kPipeline, config, DeviceType::kCPU, true), kUcx);
  config.expert = kNccl;
  EXPECT_NE(error_of([&] {
              backend_for(Traffic::kExpert, config, DeviceType::kCPU, true);
            }).find("comm.expert = \"nccl\" needs CUDA tensors"),
            std::string::npos);
  // A host backend for GPU tensors would read device pointers as host memory.
  EXPECT_NE(error_of([&] {
              backend_for(Traffic::kPipeline, config, DeviceType::kCUDA, true);
            }).find("comm.pipeline = \"ucx\" carries host memory, but train.device = \"cuda\""),
            std::string::npos);
}

FakeEnvironment torchrun_env() {
  return {{{"RANK", "1"},
           {"WORLD_SIZE", "2"},
           {"LOCAL_RANK", "1"},
           {"LOCAL_WORLD_SIZE", "2"},
           {"MASTER_ADDR", "127.0.0.1"},
           {"MASTER_PORT", "29500"}}};
}

TEST(Bootstrap, StorePortAndWhoServesIt) {
  FakeEnvironment env = torchrun_env();
  LaunchInfo info = detect_launch(env.lookup());
  EXPECT_EQ(info.store_port, 29500);
  EXPECT_EQ(info.store_host_description(), "rank 0");
  // torchrun >= 2's agent holds MASTER_PORT with its own store: every rank moves to the next.
  env.values["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  info = detect_launch(env.lookup());
  EXPECT_EQ(info.store_port, 29501);
  EXPECT_EQ(info.store_port_origin, "MASTER_PORT + 1");
  env.values["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  EXPECT_EQ(detect_launch(env.lookup()).store_port, 29500);
  env.values["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  env.values["TANDEM_STORE_PORT"] = "31000";
  info = detect_launch(env.lookup());
  EXPECT_EQ(info.store_port, 31000);
  EXPECT_EQ(info.store_port_origin, "TANDEM_STORE_PORT");
  env.values["TANDEM_STORE_PORT"] = "0";
  EXPECT_NE(
      error_of([&] { detect_launch(env.lookup()); }).find("TANDEM_STORE_PORT=0 is not a TCP port"),
      std::string::npos);
  env.values.erase("TANDEM_STORE_PORT");
  env.values["MASTER_PORT"] = "65535";
  EXPECT_NE(error_of([&] { detect_launch(env.lookup()); }).find("set TANDEM_STORE_PORT"),
            std::string::npos);
  // Under tandem-launch the launcher serves it, and says so when it stops answering.
  env = torchrun_env();
  env.values["TANDEM_STORE_SERVED_BY_LAUNCHER"] = "1";
  info = detect_launch(env.lookup());
  EXPECT_TRUE(info.store_served_by_launcher);
  EXPECT_EQ(job_store_options(info, 1000, info.store_host_description()).host_description,
            "tandem-launch on 127.0.0.1:29500");
}

TEST(Bootstrap, LauncherHeartbeatEnvironment) {
  FakeEnvironment env = torchrun_env();
  EXPECT_EQ(detect_launch(env.lookup()).heartbeat_fd, -1);
  env.values["TANDEM_HEARTBEAT_FD"] = "7";
  EXPECT_NE(error_of([&] {
              detect_launch(env.lookup());
            }).find("partial tandem-launch heartbeat environment"),
            std::string::npos);
  env.values["TANDEM_HEARTBEAT_INTERVAL_MS"] = "1000";
  env.values["TANDEM_HEARTBEAT_TIMEOUT_MS"] = "1000";
  EXPECT_NE(error_of([&] { detect_launch(env.lookup()); }).find("below the timeout"),
            std::string::npos);
  env.values["TANDEM_HEARTBEAT_TIMEOUT_MS"] = "360000";
  const LaunchInfo info = detect_launch(env.lookup());
  EXPECT_EQ(info.heartbeat_fd, 7);
  EXPECT_EQ(info.heartbeat_interval_ms, 1000);
  EXPECT_EQ(info.heartbeat_timeout_ms, 360000);
}

TEST(Bootstrap, HeartbeatBeatsUntilDestroyedThenEndOfFile) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  OwnedFd launcher_end(fds[0]);
  auto heartbeat = std::make_unique<LauncherHeartbeat>(OwnedFd(fds[1]), 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  char beats[64];
  const ssize_t n = ::recv(launcher_end.get(), beats, sizeof beats, MSG_DONTWAIT);
  EXPECT_GE(n, 3) << "about 10 beats in 100 ms at a 10 ms interval";
  heartbeat.reset();
  ssize_t last;
  while ((last = ::recv(launcher_end.get(), beats, sizeof beats, 0)) > 0) {
  }
  EXPECT_EQ(last, 0) << "the socket is closed when the heartbeat goes";
  // A descriptor that is not a socket was not given by tandem-launch.
  LaunchInfo info;
  info.heartbeat_fd = 1023;  // not open
  info.heartbeat_interval_ms = 10;
  info.heartbeat_timeout_ms = 100;
  EXPECT_NE(error_of([&] {
              LauncherHeartbeat::start_if_launched(info);
            }).find("TANDEM_HEARTBEAT_FD=1023 is not an open socket"),
            std::string::npos);
}

TEST(Bootstrap, TimeoutsMustBeOrdered) {
  LaunchInfo alone;
  EXPECT_EQ(error_of([&] { check_timeout_order(300000, 600000, alone); }), "(no error)");
  EXPECT_NE(error_of([&] {
              check_timeout_order(700000, 600000, alone);
            }).find("comm.timeout_s = 700 s is not below comm.rendezvous_timeout_s = 600 s"),
            std::string::npos);
  LaunchInfo launched;
  launched.heartbeat_fd = 3;
  launched.heartbeat_interval_ms = 1000;
  launched.heartbeat_timeout_ms = 360000;
  EXPECT_EQ(error_of([&] { check_timeout_order(300000, 600000, launched); }), "(no error)");
  EXPECT_NE(
      error_of([&] {
        check_timeout_order(360000, 600000, launched);
      }).find("comm.timeout_s = 360 s is not below tandem-launch's heartbeat timeout of 360 s"),
      std::string::npos);
  launched.heartbeat_timeout_ms = 600000;
  EXPECT_NE(error_of([&] {
              check_timeout_order(300000, 600000, launched);
            }).find("Set comm.rendezvous_timeout_s above 600"),
            std::string::npos);
}

TEST(Store, SetGetAddAndWaitAcrossClients) {
  StoreServer server("127.0.0.1", 0);
  StoreClient a("127.0.0.1", server.port(), 2000), b("127.0.0.1", server.port(), 2000);
  a.set("k", "v");
  EXPECT_EQ(b.get("k", 100), "v");
  EXPECT_FALSE(b.get("missing", 50).has_value());
  EXPECT_EQ(a.add("n", 2), 2);
  EXPECT_EQ(b.add("n", 3), 5);
  // A get waits for a key set later by another client.
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    a.set("late", "here");
  });
  EXPECT_EQ(b.get("late", 5000), "here");
  setter.join();
  EXPECT_NE(error_of([&] {
              StoreClient("127.0.0.1", 1, 100);
            }).find("cannot reach the rendezvous store at 127.0.0.1:1"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem::comm
