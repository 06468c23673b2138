// The flight recorder's ring and its text form (tab-separated, one record per line, so that it
// is both a file an operator reads and what a timed-out rank parses from its peers).
#include "comm/flight_recorder.h"

#include <chrono>
#include <cstdio>
#include <sstream>

namespace tandem::comm {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (;;) {
    const size_t tab = line.find('\t', start);
    fields.push_back(line.substr(start, tab == std::string::npos ? tab : tab - start));
    if (tab == std::string::npos) return fields;
    start = tab + 1;
  }
}

uint64_t to_u64(const std::string& text) {
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return 0;  // a damaged record reads as "nothing entered", which the report then says
  }
}

}  // namespace

FlightRecorder::FlightRecorder(int world_rank, size_t capacity)
    : world_rank_(world_rank), ring_(capacity > 0 ? capacity : 1) {}

uint64_t FlightRecorder::enter(OpRecord& op) {
  const double now = now_s();
  std::lock_guard lock(mutex_);
  op.ticket = next_ticket_++;
  Entry& slot = ring_[op.ticket % ring_.size()];
  slot.ticket = op.ticket;
  slot.op = op.op;  // assignments reuse the slot's capacity: no allocation once warm
  slot.group = op.group;
  slot.seq = op.seq;
  slot.bytes = op.bytes;
  slot.entered_s = now;
  slot.completed_s = -1;
  if (op.seq > 0) {
    GroupProgress& group = groups_[op.group];
    if (op.seq > group.entered_seq) {
      group.entered_seq = op.seq;
      group.entered_op = op.op;
    }
  }
  return op.ticket;
}

void FlightRecorder::complete(const OpRecord& op) {
  const double now = now_s();
  std::lock_guard lock(mutex_);
  Entry& slot = ring_[op.ticket % ring_.size()];
  if (slot.ticket == op.ticket) slot.completed_s = now;
  if (op.seq > 0) {
    GroupProgress& group = groups_[op.group];
    if (op.seq > group.completed_seq) group.completed_seq = op.seq;
  }
}

uint64_t FlightRecorder::entered_total() const {
  std::lock_guard lock(mutex_);
  return next_ticket_ - 1;
}

std::string FlightRecorder::serialize(bool timed_out, bool pending_only) const {
  const double now = now_s();
  std::lock_guard lock(mutex_);
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(6);
  const uint64_t entered = next_ticket_ - 1;
  out << "# tandem flight record of rank " << world_rank_ << " at " << now
      << " (unix s): " << entered << " operations entered, the last "
      << std::min<uint64_t>(entered, ring_.size()) << " below"
      << (timed_out ? "; this rank timed out" : "") << "\n";
  out << "# group\tname\tlast entered seq\tits op\tlast completed seq\n";
  for (const auto& [name, g] : groups_)
    out << "group\t" << name << '\t' << g.entered_seq << '\t' << g.entered_op << '\t'
        << g.completed_seq << '\n';
  out << "# op\tticket\tgroup\top\tseq\tbytes\tentered (unix s)\tcompleted (unix s, or pending "
         "for how long)\n";
  const uint64_t first = entered >= ring_.size() ? entered - ring_.size() + 1 : 1;
  for (uint64_t t = first; t <= entered; ++t) {
    const Entry& e = ring_[t % ring_.size()];
    if (pending_only && e.completed_s >= 0) continue;
    out << "op\t" << e.ticket << '\t' << e.group << '\t' << e.op << '\t' << e.seq << '\t' << e.bytes
        << '\t' << e.entered_s << '\t';
    if (e.completed_s >= 0) {
      out << e.completed_s;
    } else {
      out << "pending " << now - e.entered_s << " s";
    }
    out << '\n';
  }
  return out.str();
}

PeerRecord FlightRecorder::parse(const std::string& text) {
  PeerRecord record;
  std::istringstream in(text);
  double oldest_entered = 0;
  double at = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("# tandem flight record of rank ")) {
      std::sscanf(line.c_str(), "# tandem flight record of rank %d at %lf", &record.rank, &at);
      record.written_s = at;
      record.timed_out = line.find("; this rank timed out") != std::string::npos;
      continue;
    }
    const std::vector<std::string> f = split_tabs(line);
    if (f[0] == "group" && f.size() == 5) {
      record.groups[f[1]] = GroupProgress{to_u64(f[2]), f[3], to_u64(f[4])};
    } else if (f[0] == "op" && f.size() == 8 && f[7].starts_with("pending")) {
      const double entered = std::atof(f[6].c_str());
      if (!record.oldest_pending.empty() && entered >= oldest_entered) continue;
      oldest_entered = entered;
      std::ostringstream what;
      what.setf(std::ios::fixed);
      what.precision(1);
      what << f[3] << (f[4] != "0" ? " #" + f[4] : std::string()) << " on group '" << f[2] << "' ("
           << f[5] << " bytes), pending for " << (at > 0 ? at - entered : 0.0) << " s";
      record.oldest_pending = what.str();
    }
  }
  return record;
}

}  // namespace tandem::comm
