// The control service over gRPC's synchronous server: each call runs on a gRPC thread, which
// only reads the board or queues a command on it and waits for the training thread's answer.
#include "monitoring/control_server.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <sstream>

#include "monitoring/control_token.h"
#include "monitoring/proto/control.grpc.pb.h"
#include "runtime/core/errors.h"

namespace tandem::monitoring {

namespace pb = ::tandem::control::v1;

namespace {

constexpr auto kPoll =
    std::chrono::milliseconds(100);  // how often a waiting call checks its client

pb::State to_proto(JobStatus::State state) {
  switch (state) {
    case JobStatus::State::kStarting:
      return pb::STATE_STARTING;
    case JobStatus::State::kRunning:
      return pb::STATE_RUNNING;
    case JobStatus::State::kPaused:
      return pb::STATE_PAUSED;
    case JobStatus::State::kStopping:
      return pb::STATE_STOPPING;
    case JobStatus::State::kFinished:
      return pb::STATE_FINISHED;
  }
  return pb::STATE_UNSPECIFIED;
}

void to_proto(const JobStatus& s, pb::Status* out) {
  out->set_step(s.step);
  out->set_total_steps(s.total_steps);
  out->set_loss(s.loss);
  out->set_learning_rate(s.learning_rate);
  out->set_grad_norm(s.grad_norm);
  out->set_tokens_per_second(s.tokens_per_second);
  out->set_step_seconds(s.step_seconds);
  out->set_eta_seconds(s.eta_seconds);
  out->set_paused(s.state == JobStatus::State::kPaused);
  out->set_state(to_proto(s.state));
  pb::Grid* grid = out->mutable_grid();
  grid->set_world_size(s.grid.world_size);
  grid->set_pp(s.grid.pp);
  grid->set_dp(s.grid.dp);
  grid->set_ep(s.grid.ep);
  grid->set_zero1(s.grid.zero1);
  grid->set_schedule(s.grid.schedule);
  const double heard_ago =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - s.ranks_heard_at).count();
  for (size_t r = 0; r < s.ranks.size(); ++r) {
    const JobStatus::RankHealth& h = s.ranks[r];
    pb::RankStatus* rank = out->add_ranks();
    rank->set_rank(static_cast<int>(r));
    rank->set_step_seconds(h.step_seconds());
    rank->set_compute_seconds(h.compute_seconds);
    rank->set_all_to_all_wait_seconds(h.all_to_all_wait_seconds);
    rank->set_pipeline_wait_seconds(h.pipeline_wait_seconds);
    rank->set_sync_wait_seconds(h.sync_wait_seconds);
    rank->set_relative_speed(h.relative_speed);
    rank->set_straggler(h.straggler);
    rank->set_host(h.host);
    rank->set_last_heard_seconds_ago(heard_ago);
    if (h.straggler) out->add_stragglers(static_cast<int>(r));
  }
  out->set_last_checkpoint_step(s.last_checkpoint_step);
  out->set_last_checkpoint_path(s.last_checkpoint_path);
  out->set_learning_rate_changed_at_step(s.learning_rate_changed_at_step);
  out->set_checkpoint_in_progress(s.checkpoint_in_progress);
}

grpc::Status to_grpc(const CommandOutcome& outcome) {
  switch (outcome.code) {
    case CommandOutcome::Code::kOk:
      return grpc::Status::OK;
    case CommandOutcome::Code::kFailedPrecondition:
      return {grpc::StatusCode::FAILED_PRECONDITION, outcome.message};
    case CommandOutcome::Code::kAborted:
      return {grpc::StatusCode::ABORTED, outcome.message};
    case CommandOutcome::Code::kUnavailable:
      return {grpc::StatusCode::UNAVAILABLE, outcome.message};
  }
  return {grpc::StatusCode::INTERNAL, "unknown outcome"};
}

// Open WatchStatus streams at most, of the server's kServerThreads threads.
constexpr int kServerThreads = 16;
constexpr int kMaxWatchers = 8;

class Service final : public pb::Control::Service {
 public:
  Service(const ControlServerOptions& options, ControlBoard& board)
      : options_(options), board_(board) {}

  grpc::Status GetStatus(grpc::ServerContext*, const pb::GetStatusRequest*,
                         pb::Status* reply) override {
    to_proto(board_.status(), reply);
    return grpc::Status::OK;
  }

  grpc::Status WatchStatus(grpc::ServerContext* context, const pb::WatchStatusRequest*,
                           grpc::ServerWriter<pb::Status>* writer) override {
    // A stream holds one of the server's threads for as long as it lasts: watchers beyond the
    // cap are refused, so that a token holder's commands always find a thread.
    const int watching = watchers_.fetch_add(1) + 1;
    struct Leave {
      std::atomic<int>& count;
      ~Leave() { count.fetch_sub(1); }
    } leave{watchers_};
    if (watching > kMaxWatchers)
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              detail::concat(kMaxWatchers,
                             " status streams are open already, the most this job "
                             "serves (so that commands always have a thread); "
                             "close one, or poll GetStatus")};
    JobStatus status = board_.status();
    uint64_t seen = status.version;
    pb::Status message;
    to_proto(status, &message);
    if (!writer->Write(message)) return grpc::Status::OK;
    while (!context->IsCancelled()) {
      if (board_.wait_for_status(seen, kPoll, &status)) {
        seen = status.version;
        message.Clear();
        to_proto(status, &message);
        if (!writer->Write(message)) break;  // the client went away
      } else if (board_.closed()) {
        break;
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Pause(grpc::ServerContext* context, const pb::PauseRequest*,
                     pb::PauseReply* reply) override {
    CommandOutcome outcome;
    grpc::Status status = command(context, CommandKind::kPause, 0, &outcome);
    reply->set_step(outcome.step);
    reply->set_changed(outcome.changed);
    return status;
  }

  grpc::Status Resume(grpc::ServerContext* context, const pb::ResumeRequest*,
                      pb::ResumeReply* reply) override {
    CommandOutcome outcome;
    grpc::Status status = command(context, CommandKind::kResume, 0, &outcome);
    reply->set_step(outcome.step);
    reply->set_changed(outcome.changed);
    return status;
  }

  grpc::Status Checkpoint(grpc::ServerContext* context, const pb::CheckpointRequest*,
                          pb::CheckpointReply* reply) override {
    if (grpc::Status refused = authorize(context); !refused.ok()) return refused;
    if (!options_.checkpoints_enabled)
      return {grpc::StatusCode::FAILED_PRECONDITION, kCheckpointsOffRefusal};
    CommandOutcome outcome;
    grpc::Status status = command(context, CommandKind::kCheckpoint, 0, &outcome);
    reply->set_path(outcome.path);
    reply->set_step(outcome.step);
    return status;
  }

  grpc::Status SetLearningRate(grpc::ServerContext* context,
                               const pb::SetLearningRateRequest* request,
                               pb::SetLearningRateReply* reply) override {
    if (grpc::Status refused = authorize(context); !refused.ok()) return refused;
    const double lr = request->learning_rate();
    if (const std::string refused = learning_rate_refusal(lr); !refused.empty())
      return {grpc::StatusCode::INVALID_ARGUMENT, refused};
    CommandOutcome outcome;
    grpc::Status status = command(context, CommandKind::kSetLearningRate, lr, &outcome);
    reply->set_applied_at_step(outcome.step);
    reply->set_previous_learning_rate(outcome.previous_learning_rate);
    return status;
  }

  grpc::Status Stop(grpc::ServerContext* context, const pb::StopRequest*,
                    pb::StopReply* reply) override {
    CommandOutcome outcome;
    grpc::Status status = command(context, CommandKind::kStop, 0, &outcome);
    reply->set_step(outcome.step);
    reply->set_checkpoint_path(outcome.path);
    return status;
  }

 private:
  // Commands must carry the job's token; the check happens before anything is queued.
  grpc::Status authorize(grpc::ServerContext* context) const {
    const auto& metadata = context->client_metadata();
    const auto found = metadata.find("authorization");
    if (found == metadata.end())
      return {grpc::StatusCode::UNAUTHENTICATED,
              "no token: commands need 'authorization: Bearer TOKEN' metadata (tandemctl "
              "--token-file FILE, or TANDEM_CONTROL_TOKEN); the job logged where its token is"};
    const std::string_view given(found->second.data(), found->second.size());
    constexpr std::string_view kScheme = "Bearer ";
    if (!given.starts_with(kScheme) || !tokens_equal(given.substr(kScheme.size()), options_.token))
      return {grpc::StatusCode::UNAUTHENTICATED,
              "wrong token: nothing was changed; use the token the job logged (its "
              "control.token_file, TANDEM_CONTROL_TOKEN, or the file it generated)"};
    return grpc::Status::OK;
  }

  // Queues a command and waits for its answer. A client that goes away does not withdraw it:
  // it was accepted, and is applied at the next boundary all the same.
  grpc::Status command(grpc::ServerContext* context, CommandKind kind, double learning_rate,
                       CommandOutcome* outcome) {
    if (grpc::Status refused = authorize(context); !refused.ok()) return refused;
    const std::shared_future<CommandOutcome> answer = board_.submit(kind, learning_rate);
    while (answer.wait_for(kPoll) != std::future_status::ready)
      if (context->IsCancelled())
        return {grpc::StatusCode::CANCELLED,
                "the client went away; the command stays queued for the next step boundary"};
    *outcome = answer.get();
    return to_grpc(*outcome);
  }

  const ControlServerOptions options_;
  ControlBoard& board_;
  std::atomic<int> watchers_{0};
};

}  // namespace

struct ControlServer::Impl {
  std::string address;
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
};

ControlServer::ControlServer(const ControlServerOptions& options, ControlBoard& board)
    : impl_(std::make_unique<Impl>()) {
  const bool ipv6 = options.bind.find(':') != std::string::npos && options.bind.front() != '[';
  impl_->address =
      (ipv6 ? "[" + options.bind + "]" : options.bind) + ":" + std::to_string(options.port);
  impl_->service = std::make_unique<Service>(options, board);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(impl_->address, grpc::InsecureServerCredentials(), &bound_port);
  // gRPC turns SO_REUSEPORT on by default: a second job given the same port would then share it
  // and receive half of the first one's commands.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // A few threads are plenty for an operator's calls; bounded so that a flood of callers cannot
  // take the training process's memory (and watchers are capped below it: kMaxWatchers).
  grpc::ResourceQuota quota("tandem-control");
  quota.SetMaxThreads(kServerThreads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(impl_->service.get());
  impl_->server = builder.BuildAndStart();
  TANDEM_USER_CHECK(impl_->server && bound_port == options.port, "control: cannot listen on ",
                    impl_->address,
                    " (the port is in use, or control.bind is not an address of this machine); "
                    "choose another control.port, or control.port = 0 to turn the service off");
}

ControlServer::~ControlServer() {
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  impl_->server->Wait();
}

const std::string& ControlServer::address() const {
  return impl_->address;
}

}  // namespace tandem::monitoring
