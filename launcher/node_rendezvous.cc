// The launchers' agreement on attempts, over node 0's store. Keys (under
// tandem/RUN/launchers/): "state" = "open A" while node 0 gathers the nodes for attempt A,
// "running A" once their ranks start, "done"; "ready/A/N"; "go/A"; "failed/A" (the first
// failure's description); "outcome/A/N" (JSON); "decision/A" (JSON).
#include "launcher/node_rendezvous.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "comm/faults.h"
#include "runtime/core/errors.h"

namespace tandem::launcher {

namespace {

using Clock = std::chrono::steady_clock;

// Node 0 was started again: the attempt this node was in is gone with its store.
struct Rejoined {};

// How long node 0 waits for every node's outcome after an attempt: an alive launcher reports
// within its failure grace of the first failure; one that does not is gone.
constexpr std::chrono::milliseconds kOutcomeWait{10000};
constexpr std::chrono::milliseconds kPoll{200};

void say(const std::string& text) {
  std::fprintf(stderr, "tandem-launch: %s\n", text.c_str());
}

int attempt_of_state(const std::string& state, const char* word) {
  const std::string prefix = std::string(word) + " ";
  return state.starts_with(prefix) ? std::stoi(state.substr(prefix.size())) : -1;
}

}  // namespace

NodeRendezvous::NodeRendezvous(NodeRendezvousOptions options) : options_(std::move(options)) {
  connect(options_.rendezvous_timeout);
}

NodeRendezvous::~NodeRendezvous() = default;

void NodeRendezvous::connect(std::chrono::milliseconds timeout) {
  comm::StoreClientOptions o;
  o.connect_timeout_ms = static_cast<int>(timeout.count());
  o.request_timeout_ms = 5000;
  o.token = options_.token;
  o.key_prefix = "tandem/" + options_.run_id + "/launchers/";
  o.host_description = "tandem-launch of node 0";
  store_.reset();
  try {
    store_ = std::make_unique<comm::StoreClient>(options_.master_addr, options_.master_port, o);
  } catch (const std::exception& e) {
    throw comm::StoreLost(detail::concat("node ", options_.node_rank, ": node 0's launcher (",
                                         options_.master_addr, ":", options_.master_port,
                                         ") did not answer within ", timeout.count() / 1000.0,
                                         " s: ", e.what()));
  }
}

template <class Request>
auto NodeRendezvous::with_store(Request request) {
  try {
    return request(*store_);
  } catch (const comm::StoreLost& lost) {
    if (options_.node_rank == 0) throw;
    say(detail::concat("node 0's launcher (its store at ", options_.master_addr, ":",
                       options_.master_port, ") is gone: ", lost.what(), "; waiting up to ",
                       options_.rendezvous_timeout.count() / 1000.0,
                       " s for it to come back (start it again on node 0)"));
    connect(options_.rendezvous_timeout);
    say("node 0's launcher is back; joining the attempt it opens");
    throw Rejoined{};
  }
}

int NodeRendezvous::first_attempt() {
  if (options_.node_rank == 0) return 0;
  const Clock::time_point deadline = Clock::now() + options_.rendezvous_timeout;
  Clock::time_point next_note = Clock::now() + std::chrono::seconds(10);
  while (true) {
    try {
      const std::optional<std::string> state = with_store(
          [&](comm::StoreClient& s) { return s.get("state", static_cast<int>(kPoll.count())); });
      if (state && *state == "done")
        throw UsageError("the job's other launchers have finished it (node 0 says done)");
      if (state && attempt_of_state(*state, "open") >= 0) return attempt_of_state(*state, "open");
    } catch (const Rejoined&) {
      continue;
    }
    if (Clock::now() > deadline)
      throw comm::StoreLost(detail::concat("node ", options_.node_rank,
                                           ": node 0 opened no attempt within ",
                                           options_.rendezvous_timeout.count() / 1000.0, " s"));
    if (Clock::now() > next_note) {
      say("waiting for node 0 to open the next attempt (one is running without this node)");
      next_note = Clock::now() + std::chrono::seconds(10);
    }
    std::this_thread::sleep_for(kPoll);
  }
}

void NodeRendezvous::start(int& attempt) {
  const Clock::time_point deadline = Clock::now() + options_.rendezvous_timeout;
  Clock::time_point next_note = Clock::now() + std::chrono::seconds(10);
  const std::string me = std::to_string(options_.node_rank);
  if (options_.node_rank == 0) {
    store_->set("state", "open " + std::to_string(attempt));
    for (int n = 1; n < options_.nnodes; ++n) {
      const std::string ready = detail::concat("ready/", attempt, "/", n);
      while (!store_->get(ready, static_cast<int>(kPoll.count()))) {
        if (Clock::now() > deadline)
          throw comm::StoreLost(detail::concat(
              "node ", n, "'s launcher did not join attempt ", attempt, " within ",
              options_.rendezvous_timeout.count() / 1000.0, " s; start it again on that node"));
        if (Clock::now() > next_note) {
          say(detail::concat("waiting for node ", n, "'s launcher to join attempt ", attempt));
          next_note = Clock::now() + std::chrono::seconds(10);
        }
      }
    }
    store_->set(detail::concat("go/", attempt), "1");
    store_->set("state", "running " + std::to_string(attempt));
    return;
  }
  while (true) {
    try {
      with_store([&](comm::StoreClient& s) {
        s.set(detail::concat("ready/", attempt, "/", me), "1");
        return 0;
      });
      while (!with_store([&](comm::StoreClient& s) {
        return s.get(detail::concat("go/", attempt), static_cast<int>(kPoll.count()));
      })) {
        if (Clock::now() > deadline)
          throw comm::StoreLost(detail::concat("node 0 did not start attempt ", attempt, " within ",
                                               options_.rendezvous_timeout.count() / 1000.0, " s"));
        if (Clock::now() > next_note) {
          say(detail::concat("waiting for every node's launcher to join attempt ", attempt));
          next_note = Clock::now() + std::chrono::seconds(10);
        }
      }
      return;
    } catch (const Rejoined&) {
      attempt = first_attempt();
    }
  }
}

std::string NodeRendezvous::failure(int attempt) {
  try {
    const std::optional<std::string> failed = store_->get(detail::concat("failed/", attempt), 0);
    return failed ? *failed : "";
  } catch (const comm::StoreLost& lost) {
    return detail::concat("node 0's store stopped answering (", lost.what(), ")");
  }
}

NextStep NodeRendezvous::finish(int attempt, const NodeOutcome& outcome) {
  const nlohmann::json mine = {
      {"code", outcome.code}, {"retryable", outcome.retryable}, {"what", outcome.what}};
  const bool failed = outcome.code != 0 && outcome.code != comm::kStoppedExitCode;
  try {
    with_store([&](comm::StoreClient& s) {
      if (failed && s.add(detail::concat("failures/", attempt), 1) == 1)
        s.set(detail::concat("failed/", attempt),
              detail::concat("node ", options_.node_rank, ": ", outcome.what));
      s.set(detail::concat("outcome/", attempt, "/", options_.node_rank), mine.dump());
      return 0;
    });
  } catch (const Rejoined&) {
    return {true, first_attempt(), 0, "node 0 was started again"};
  }
  if (options_.node_rank != 0) {
    const Clock::time_point deadline = Clock::now() + options_.rendezvous_timeout;
    while (true) {
      std::optional<std::string> decision;
      try {
        decision = with_store([&](comm::StoreClient& s) {
          return s.get(detail::concat("decision/", attempt), static_cast<int>(kPoll.count()));
        });
      } catch (const Rejoined&) {
        return {true, first_attempt(), 0, "node 0 was started again"};
      }
      if (decision) {
        // Node 0 keeps its store up until every node has read a final decision.
        try {
          store_->set(detail::concat("ack/", attempt, "/", options_.node_rank), "1");
        } catch (const comm::StoreLost&) {
        }
        const nlohmann::json d = nlohmann::json::parse(*decision);
        return {d["restart"].get<bool>(), d["attempt"].get<int>(), d["code"].get<int>(),
                d["why"].get<std::string>()};
      }
      if (Clock::now() > deadline)
        throw comm::StoreLost(detail::concat("node 0 decided nothing about attempt ", attempt,
                                             " within ",
                                             options_.rendezvous_timeout.count() / 1000.0, " s"));
    }
  }
  // Node 0: every node's outcome (one that never reports lost its launcher: a restart can help
  // once a new one joins), then one decision for all.
  std::vector<NodeOutcome> outcomes{outcome};
  const Clock::time_point deadline = Clock::now() + kOutcomeWait;
  for (int n = 1; n < options_.nnodes; ++n) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    const std::optional<std::string> text =
        store_->get((detail::concat("outcome/", attempt, "/", n)),
                    static_cast<int>(std::max<int64_t>(0, left.count())));
    if (!text) {
      outcomes.push_back({comm::kCommFaultExitCode, true,
                          detail::concat("node ", n, "'s launcher did not report (gone?)")});
      continue;
    }
    const nlohmann::json o = nlohmann::json::parse(*text);
    outcomes.push_back(
        {o["code"].get<int>(), o["retryable"].get<bool>(), o["what"].get<std::string>()});
  }
  NextStep next;
  bool any_failed = false, any_stopped = false;
  for (const NodeOutcome& o : outcomes) {
    const bool f = o.code != 0 && o.code != comm::kStoppedExitCode;
    any_stopped = any_stopped || o.code == comm::kStoppedExitCode;
    if (!f) continue;
    if (!any_failed) next.why = o.what;
    any_failed = true;
    if (!o.retryable && next.code == 0) {  // the first that a restart would repeat decides
      next.code = o.code;
      next.why = o.what + "; a restart would fail the same way";
    }
  }
  if (!any_failed) {
    next.code = any_stopped ? comm::kStoppedExitCode : 0;
    next.why = any_stopped ? "stopped on request (exit 4)" : "done";
  } else if (next.code == 0) {
    if (any_stopped) {
      next.code = comm::kCommFaultExitCode;
      next.why += "; a node had stopped on request in this attempt, not restarting";
    } else if (attempt >= options_.max_restarts) {
      next.code = comm::kCommFaultExitCode;
      next.why += detail::concat("; no restarts left (--max-restarts ", options_.max_restarts, ")");
    } else {
      next.restart = true;
      next.attempt = attempt + 1;
    }
  }
  store_->set(detail::concat("decision/", attempt), nlohmann::json{{"restart", next.restart},
                                                                   {"attempt", next.attempt},
                                                                   {"code", next.code},
                                                                   {"why", next.why}}
                                                        .dump());
  if (!next.restart) {
    store_->set("state", "done");
    const Clock::time_point ack_deadline = Clock::now() + kOutcomeWait;
    for (int n = 1; n < options_.nnodes; ++n) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(ack_deadline - Clock::now());
      if (!store_->get(detail::concat("ack/", attempt, "/", n),
                       static_cast<int>(std::max<int64_t>(0, left.count()))))
        say(detail::concat("node ", n, "'s launcher did not read the decision (gone?)"));
    }
  }
  return next;
}

}  // namespace tandem::launcher
