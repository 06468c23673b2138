// StatusPage: what the training thread hands it, and the HTML with inline SVG charts drawn from
// that on request.
#include "monitoring/status_page.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "runtime/core/text_format.h"

namespace tandem::monitoring {

namespace {

// How much of the previous expert load the average keeps each step (about 10 steps' memory).
constexpr double kExpertLoadDecay = 0.9;
constexpr int kChartWidth = 560, kChartHeight = 180;

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

const char* state_name(JobStatus::State state, bool checkpointing) {
  switch (state) {
    case JobStatus::State::kStarting:
      return "starting";
    case JobStatus::State::kRunning:
      return checkpointing ? "running, writing a checkpoint" : "running";
    case JobStatus::State::kPaused:
      return "paused";
    case JobStatus::State::kStopping:
      return "stopping (final checkpoint)";
    case JobStatus::State::kFinished:
      return "finished";
  }
  return "?";
}

const char* state_color(JobStatus::State state) {
  switch (state) {
    case JobStatus::State::kRunning:
      return "#2e7d32";
    case JobStatus::State::kPaused:
      return "#b26a00";
    case JobStatus::State::kStopping:
      return "#1565c0";
    default:
      return "#555";
  }
}

struct Series {
  std::string name, color;
  const std::vector<std::pair<double, double>>* points;
  bool dots = false;
};

// A line chart of every series over their common step range, with its extremes on the axes.
std::string line_chart(const std::string& title, const std::vector<Series>& series) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : series)
    for (auto [x, y] : *s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  const int left = 56, right = 12, top = 22, bottom = 24;
  const int w = kChartWidth - left - right, h = kChartHeight - top - bottom;
  std::string svg = "<svg class=\"chart\" width=\"" + std::to_string(kChartWidth) + "\" height=\"" +
                    std::to_string(kChartHeight) +
                    "\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"" +
                    xml_escape(title) + "\">";
  svg += "<text x=\"4\" y=\"14\" class=\"title\">" + xml_escape(title) + "</text>";
  svg += "<rect x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(top) + "\" width=\"" +
         std::to_string(w) + "\" height=\"" + std::to_string(h) + "\" class=\"plot\"/>";
  if (!(x0 <= x1)) return svg + "<text x=\"200\" y=\"100\">no steps yet</text></svg>";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + std::max(1e-9, std::fabs(y0) * 0.01), y0 -= (y1 - y0);
  const auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * w; };
  const auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * h; };
  const std::string fmt = std::fabs(y1) >= 1000 ? "%.0f" : "%.4g";
  svg += "<text x=\"" + std::to_string(left - 4) + "\" y=\"" + std::to_string(top + 10) +
         "\" class=\"axis\" text-anchor=\"end\">" + format(fmt.c_str(), y1) + "</text>";
  svg += "<text x=\"" + std::to_string(left - 4) + "\" y=\"" + std::to_string(top + h) +
         "\" class=\"axis\" text-anchor=\"end\">" + format(fmt.c_str(), y0) + "</text>";
  svg += "<text x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(kChartHeight - 8) +
         "\" class=\"axis\">step " + format("%.0f", x0) + "</text>";
  svg += "<text x=\"" + std::to_string(left + w) + "\" y=\"" + std::to_string(kChartHeight - 8) +
         "\" class=\"axis\" text-anchor=\"end\">step " + format("%.0f", x1) + "</text>";
  int legend_x = left + 8;
  for (const Series& s : series) {
    std::string points;
    for (auto [x, y] : *s.points) {
      if (!std::isfinite(y)) continue;
      if (s.dots)
        svg += "<circle cx=\"" + format("%.1f", px(x)) + "\" cy=\"" + format("%.1f", py(y)) +
               "\" r=\"3\" fill=\"" + s.color + "\"/>";
      else
        points += format("%.1f", px(x)) + "," + format("%.1f", py(y)) + " ";
    }
    if (!s.dots && !points.empty())
      svg += "<polyline fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"1.5\" points=\"" +
             points + "\"/>";
    svg += "<text x=\"" + std::to_string(legend_x) + "\" y=\"" + std::to_string(top + 14) +
           "\" class=\"legend\" fill=\"" + s.color + "\">" + xml_escape(s.name) + "</text>";
    legend_x += 12 + 7 * static_cast<int>(s.name.size());
  }
  return svg + "</svg>";
}

// Every rank's last step as a stacked bar (compute, then its waits), the slowest first when
// there are too many to show.
std::string rank_bars(const std::vector<JobStatus::RankHealth>& ranks) {
  constexpr size_t kShown = 32;
  std::vector<size_t> order(ranks.size());
  std::iota(order.begin(), order.end(), 0);
  std::string note;
  if (ranks.size() > kShown) {
    std::partial_sort(order.begin(), order.begin() + kShown, order.end(), [&](size_t a, size_t b) {
      return ranks[a].compute_seconds > ranks[b].compute_seconds;
    });
    order.resize(kShown);
    note = "the " + std::to_string(kShown) + " ranks with the most compute, of " +
           std::to_string(ranks.size());
  }
  double longest = 0;
  for (size_t r : order) longest = std::max(longest, ranks[r].step_seconds());
  const int row = 20, label = 130, width = kChartWidth;
  const int height = 30 + row * static_cast<int>(order.size());
  std::string svg = "<svg class=\"chart\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) +
                    "\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"step time "
                    "per rank\">";
  struct Part {
    const char* name;
    const char* color;
    double JobStatus::RankHealth::*seconds;
  };
  const Part parts[] = {
      {"compute", "#1f77b4", &JobStatus::RankHealth::compute_seconds},
      {"all-to-all wait", "#ff7f0e", &JobStatus::RankHealth::all_to_all_wait_seconds},
      {"pipeline wait", "#9e9e9e", &JobStatus::RankHealth::pipeline_wait_seconds},
      {"sync wait", "#9467bd", &JobStatus::RankHealth::sync_wait_seconds}};
  int legend_x = label;
  for (const Part& part : parts) {
    svg += "<rect x=\"" + std::to_string(legend_x) +
           "\" y=\"6\" width=\"10\" height=\"10\" fill=\"" + part.color + "\"/><text x=\"" +
           std::to_string(legend_x + 14) + "\" y=\"15\" class=\"legend\">" + part.name + "</text>";
    legend_x += 26 + 7 * static_cast<int>(std::string(part.name).size());
  }
  int y = 24;
  for (size_t r : order) {
    const JobStatus::RankHealth& h = ranks[r];
    std::string name = "rank " + std::to_string(r) + (h.host.empty() ? "" : " (" + h.host + ")");
    if (name.size() > 22) name = name.substr(0, 21) + "…";
    svg += "<text x=\"4\" y=\"" + std::to_string(y + 13) + "\" class=\"" +
           (h.straggler ? "straggler" : "axis") + "\">" + xml_escape(name) + "</text>";
    double x = label;
    const double scale = longest > 0 ? (width - label - 175) / longest : 0;
    for (const Part& part : parts) {
      const double w = h.*part.seconds * scale;
      if (w <= 0) continue;
      svg += "<rect x=\"" + format("%.1f", x) + "\" y=\"" + std::to_string(y + 2) + "\" width=\"" +
             format("%.1f", w) + "\" height=\"" + std::to_string(row - 6) + "\" fill=\"" +
             part.color + "\"><title>rank " + std::to_string(r) + " " + part.name + ": " +
             format("%.1f", h.*part.seconds * 1e3) + " ms</title></rect>";
      x += w;
    }
    svg += "<text x=\"" + format("%.1f", x + 6) + "\" y=\"" + std::to_string(y + 13) +
           "\" class=\"" + (h.straggler ? "straggler" : "axis") + "\">" +
           format("%.1f ms", h.step_seconds() * 1e3) +
           (h.straggler ? " straggler (speed " + format("%.2f", h.relative_speed) + ")" : "") +
           "</text>";
    y += row;
  }
  svg += "</svg>";
  if (!note.empty()) svg += "<p class=\"note\">" + note + "</p>";
  return svg;
}

// Rows are layers, columns experts; a cell's colour says how far its load is from the layer's
// mean (blue below, red above, white at the mean).
std::string expert_heat_map(const std::vector<int64_t>& layers,
                            const std::vector<std::vector<double>>& load) {
  if (layers.empty()) return "<p class=\"note\">no expert load reported by this rank</p>";
  const size_t experts = load.front().size();
  const int label = 70;
  const double cell =
      std::clamp((kChartWidth - label - 10) / double(std::max<size_t>(1, experts)), 2.0, 28.0);
  const int row = 18;
  const int height = 20 + row * static_cast<int>(layers.size());
  std::string svg = "<svg class=\"chart\" width=\"" + std::to_string(kChartWidth) + "\" height=\"" +
                    std::to_string(height) +
                    "\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"expert "
                    "load\">";
  for (size_t l = 0; l < layers.size(); ++l) {
    const double mean =
        std::accumulate(load[l].begin(), load[l].end(), 0.0) / static_cast<double>(experts);
    const int y = 4 + row * static_cast<int>(l);
    svg += "<text x=\"4\" y=\"" + std::to_string(y + 12) + "\" class=\"axis\">layer " +
           std::to_string(layers[l]) + "</text>";
    for (size_t e = 0; e < experts; ++e) {
      const double ratio = mean > 0 ? load[l][e] / mean : 1;
      const double strength = std::clamp(std::fabs(ratio - 1), 0.0, 1.0);
      const int fade = static_cast<int>(std::lround(255 * (1 - strength)));
      char color[16];
      if (ratio >= 1)
        std::snprintf(color, sizeof color, "#ff%02x%02x", fade, fade);
      else
        std::snprintf(color, sizeof color, "#%02x%02xff", fade, fade);
      svg += "<rect x=\"" + format("%.1f", label + cell * static_cast<double>(e)) + "\" y=\"" +
             std::to_string(y) + "\" width=\"" + format("%.1f", cell - 1) + "\" height=\"" +
             std::to_string(row - 2) + "\" fill=\"" + color + "\"><title>layer " +
             std::to_string(layers[l]) + " expert " + std::to_string(e) + ": " +
             format("%.2f", ratio) + " of the mean</title></rect>";
    }
  }
  svg += "<text x=\"4\" y=\"" + std::to_string(height - 2) + "\" class=\"axis\">experts 0 .. " +
         std::to_string(experts - 1) +
         ": white = the layer's mean load, red above it, blue below (full colour: 2x / 0x)"
         "</text></svg>";
  return svg;
}

}  // namespace

StatusPage::StatusPage(StatusPageIdentity identity) : identity_(std::move(identity)) {}

void StatusPage::append(std::vector<Point>& curve, Point point) {
  if (!curve.empty() && curve.back().step == point.step) {
    curve.back() = point;
    return;
  }
  curve.push_back(point);
  if (curve.size() > kMaxPoints) {
    // Keep the first, every other one after it, and the newest.
    std::vector<Point> kept;
    for (size_t i = 0; i < curve.size(); i += 2) kept.push_back(curve[i]);
    if (kept.back().step != curve.back().step) kept.push_back(curve.back());
    curve = std::move(kept);
  }
}

void StatusPage::update(const JobStatus& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool new_step = status.step > status_.step || loss_.empty();
  status_ = status;
  if (new_step && status.step > 0 && status.state != JobStatus::State::kStarting) {
    append(loss_, {double(status.step), status.loss});
    append(tokens_per_second_, {double(status.step), status.tokens_per_second});
  }
}

void StatusPage::record_evaluation(int64_t step, double loss) {
  std::lock_guard<std::mutex> lock(mutex_);
  append(eval_loss_, {double(step), loss});
}

void StatusPage::record_expert_load(int64_t layer, const std::vector<int64_t>& tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find(expert_layers_.begin(), expert_layers_.end(), layer);
  if (it == expert_layers_.end()) {
    expert_layers_.push_back(layer);
    expert_load_.emplace_back(tokens.begin(), tokens.end());
    return;
  }
  auto& average = expert_load_[static_cast<size_t>(it - expert_layers_.begin())];
  average.resize(tokens.size());
  for (size_t e = 0; e < tokens.size(); ++e)
    average[e] = kExpertLoadDecay * average[e] + (1 - kExpertLoadDecay) * double(tokens[e]);
}

std::string StatusPage::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const JobStatus& s = status_;
  const auto pairs = [](const std::vector<Point>& curve) {
    std::vector<std::pair<double, double>> out;
    for (const Point& p : curve) out.emplace_back(p.step, p.value);
    return out;
  };
  const auto loss = pairs(loss_), eval = pairs(eval_loss_), speed = pairs(tokens_per_second_);
  std::string stragglers;
  for (size_t r = 0; r < s.ranks.size(); ++r)
    if (s.ranks[r].straggler)
      stragglers += (stragglers.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) +
                    (s.ranks[r].host.empty() ? "" : " on " + s.ranks[r].host);
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta http-equiv=\"refresh\" content=\"" +
      std::to_string(identity_.refresh_seconds) + "\"><title>" + xml_escape(identity_.job) +
      ": step " + std::to_string(s.step) +
      "</title><style>"
      "body{font-family:sans-serif;margin:16px;color:#222;background:#fafafa}"
      "h1{font-size:20px;margin:0 0 4px}.state{display:inline-block;color:#fff;padding:2px 8px;"
      "border-radius:4px}table.facts td{padding:1px 12px 1px 0}.grid{display:flex;flex-wrap:wrap;"
      "gap:12px}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}"
      "svg text{font-size:11px}.title{font-weight:bold;font-size:12px}.axis{fill:#555}"
      ".legend{font-size:11px}.plot{fill:none;stroke:#ccc}.straggler{fill:#c62828;"
      "font-weight:bold}.warn{color:#c62828;font-weight:bold}.note{color:#555;font-size:12px}"
      "</style></head><body>\n";
  html += "<h1>" + xml_escape(identity_.job) +
          " <span class=\"state\" id=\"state\" style=\"background:" + state_color(s.state) + "\">" +
          state_name(s.state, s.checkpoint_in_progress) + "</span></h1>\n";
  html += "<table class=\"facts\"><tr><td>step <b id=\"step\">" + std::to_string(s.step) +
          "</b> of " + std::to_string(s.total_steps) + "</td><td>loss <b>" +
          format("%.4f", s.loss) + "</b></td><td>learning rate " + format("%.3g", s.learning_rate) +
          "</td><td>" + format("%.0f", s.tokens_per_second) + " tokens/s</td><td>" +
          format("%.1f", s.step_seconds * 1e3) + " ms/step</td><td>ETA " +
          format_duration_hms(s.eta_seconds) +
          "</td></tr><tr><td>grid: " + std::to_string(s.grid.world_size) + " rank" +
          (s.grid.world_size == 1 ? "" : "s") + " = pp " + std::to_string(s.grid.pp) + " × dp " +
          std::to_string(s.grid.dp) + " (ep " + std::to_string(s.grid.ep) + ")" +
          (s.grid.zero1 ? ", ZeRO-1" : "") +
          (s.grid.schedule.empty() ? "" : ", " + xml_escape(s.grid.schedule)) +
          "</td><td>restarts " + std::to_string(identity_.restart_count) +
          "</td><td colspan=\"2\">last checkpoint: " +
          (s.last_checkpoint_step > 0 ? "step " + std::to_string(s.last_checkpoint_step) + " (" +
                                            xml_escape(s.last_checkpoint_path) + ")"
                                      : std::string("none yet")) +
          "</td><td colspan=\"2\">" + xml_escape(identity_.config_path) + " on " +
          xml_escape(identity_.node) + "</td></tr></table>\n";
  if (s.learning_rate_changed_at_step > 0)
    html += "<p class=\"note\">learning rate set by an operator from step " +
            std::to_string(s.learning_rate_changed_at_step) + " on</p>\n";
  if (!stragglers.empty())
    html += "<p class=\"warn\" id=\"stragglers\">stragglers: " + xml_escape(stragglers) + "</p>\n";
  html +=
      "<div class=\"grid\">\n<div class=\"card\">" +
      line_chart("loss",
                 {{"training loss", "#1f77b4", &loss}, {"held-out loss", "#d62728", &eval, true}}) +
      "</div>\n<div class=\"card\">" +
      line_chart("tokens per second", {{"tokens/s", "#2ca02c", &speed}}) +
      "</div>\n<div class=\"card\"><div class=\"title\">last step per rank: compute and "
      "waits on peers</div>" +
      (s.ranks.empty() ? std::string("<p class=\"note\">no step yet</p>") : rank_bars(s.ranks)) +
      "</div>\n<div class=\"card\"><div class=\"title\">tokens per expert (average over "
      "about the last 10 steps)</div>" +
      expert_heat_map(expert_layers_, expert_load_) + "</div>\n</div>\n";
  html += "<p class=\"note\">reloads every " + std::to_string(identity_.refresh_seconds) +
          " s; the metrics are at <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n";
  return html;
}

std::string stale_page(const std::string& last_page, const std::string& state_text,
                       const std::string& why) {
  const std::string state = "<span class=\"state\" id=\"state\" style=\"background:#c62828\">" +
                            xml_escape(state_text) + "</span>";
  const std::string note = "<p class=\"warn\" id=\"stale\">" + xml_escape(why) +
                           "; what follows is rank 0's last page, until it (or the next attempt's "
                           "rank 0) answers</p>\n";
  const size_t begin = last_page.find("<span class=\"state\" id=\"state\"");
  const size_t end = begin == std::string::npos ? begin : last_page.find("</span>", begin);
  const size_t heading = end == std::string::npos ? end : last_page.find("</h1>\n", end);
  if (heading == std::string::npos)  // no page yet (or not one of ours): a page of its own
    return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta http-equiv=\"refresh\" content=\"2\"><title>" +
           xml_escape(state_text) +
           "</title></head><body style=\"font-family:sans-serif;margin:16px\">"
           "<h1 style=\"font-size:20px\"><span style=\"color:#fff;background:#c62828;"
           "padding:2px 8px;border-radius:4px\" id=\"state\">" +
           xml_escape(state_text) + "</span></h1><p id=\"stale\">" + xml_escape(why) +
           "</p></body></html>\n";
  return last_page.substr(0, begin) + state + last_page.substr(end + 7, heading + 6 - (end + 7)) +
         note + last_page.substr(heading + 6);
}

}  // namespace tandem::monitoring
