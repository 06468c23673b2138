// SVG rendering of a simulated schedule: rows of instruction rectangles on a time axis.
#include "parallelism/schedule_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "runtime/core/errors.h"
#include "runtime/core/text_format.h"

namespace tandem::parallel {

namespace {

constexpr double kLeftMargin = 70;  // room for "rank 12"
constexpr double kRightMargin = 20;
constexpr double kTopMargin = 58;  // title and legend
constexpr double kRowHeight = 26;
constexpr double kRowGap = 6;
constexpr double kAxisHeight = 40;
constexpr double kTargetWidth = 1200;  // of the time area, before clamping the scale

struct Palette {
  const char* forward;
  const char* backward_input;
  const char* backward;
};
// Two hues, so the two directions of DualPipe (or the two legs of the V) read apart at a glance.
constexpr Palette kPalettes[2] = {{"#9ecae1", "#4292c6", "#08519c"},
                                  {"#fdd0a2", "#fd8d3c", "#a63603"}};
constexpr const char* kWeightColour = "#bdbdbd";

// Which palette an instruction of (rank, chunk) uses.
int colour_family(const PipelineLayout& layout, int rank, int chunk) {
  if (layout.kind() == ScheduleKind::kDualPipeV) return chunk;
  return layout.direction_of(rank, chunk);
}

// Numbers printed into the SVG: fixed, short, locale-independent.
std::string num(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", value);
  std::string out = text;
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return out;
}

class SvgWriter {
 public:
  void rect(double x, double y, double width, double height, const char* fill,
            const std::string& tooltip) {
    out_ << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(width)
         << "\" height=\"" << num(height) << "\" fill=\"" << fill
         << "\" stroke=\"#333\" stroke-width=\"0.5\">";
    if (!tooltip.empty()) out_ << "<title>" << xml_escape(tooltip) << "</title>";
    out_ << "</rect>\n";
  }
  void text(double x, double y, const std::string& content, double size,
            const char* anchor = "middle", const char* fill = "#000") {
    out_ << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" font-size=\"" << num(size)
         << "\" text-anchor=\"" << anchor << "\" fill=\"" << fill << "\">" << xml_escape(content)
         << "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2) {
    out_ << "<line x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\"" << num(x2) << "\" y2=\""
         << num(y2) << "\" stroke=\"#333\" stroke-width=\"1\"/>\n";
  }
  std::ostringstream& raw() { return out_; }

 private:
  std::ostringstream out_;
};

// A tick spacing of 1, 2 or 5 × 10^k giving about ten ticks over `span`.
double tick_step(double span) {
  if (span <= 0) return 1;
  const double rough = span / 10;
  const double power = std::pow(10.0, std::floor(std::log10(rough)));
  for (double factor : {1.0, 2.0, 5.0}) {
    if (factor * power >= rough) return factor * power;
  }
  return 10 * power;
}

}  // namespace

std::string schedule_svg(const Schedule& schedule, const SimulationResult& result) {
  const PipelineLayout layout = schedule.layout();
  TANDEM_CHECK(
      result.timeline.size() ==
          [&] {
            size_t n = 0;
            for (const auto& list : schedule.ranks) n += list.size();
            return n;
          }(),
      "the simulation result does not belong to this schedule");
  const double makespan = std::max(result.makespan, 1e-9);
  // Wide enough that a unit-cost instruction can hold its label, narrow enough to view.
  const double scale = std::clamp(kTargetWidth / makespan, 4.0, 60.0);
  double width = kLeftMargin + makespan * scale + kRightMargin;
  const double rows_height = schedule.pp * (kRowHeight + kRowGap);
  const double height = kTopMargin + rows_height + kAxisHeight;
  auto x_of = [&](double time) { return kLeftMargin + time * scale; };
  auto y_of = [&](int rank) { return kTopMargin + rank * (kRowHeight + kRowGap); };

  // The body is written first so the canvas can be widened to fit the legend.
  SvgWriter svg;
  svg.text(kLeftMargin, 18,
           detail::concat(choice_name(schedule.kind), ": pp ", schedule.pp, ", ",
                          schedule.microbatches, " micro-batches; makespan ", num(result.makespan),
                          ", bubble ", num(result.bubble)),
           13, "start");

  // Legend: one swatch per kind of box.
  const bool two_families = layout.chunks_per_rank() == 2;
  const char* family_names[2] = {
      layout.kind() == ScheduleKind::kDualPipeV ? "chunk 0" : "direction 0",
      layout.kind() == ScheduleKind::kDualPipeV ? "chunk 1" : "direction 1"};
  double legend_x = kLeftMargin;
  auto swatch = [&](const char* fill, const std::string& label) {
    svg.rect(legend_x, 30, 14, 14, fill, "");
    svg.text(legend_x + 18, 41, label, 11, "start");
    legend_x += 26 + 6.5 * label.size();
  };
  for (int family = 0; family < (two_families ? 2 : 1); ++family) {
    const std::string prefix = two_families ? std::string(family_names[family]) + " " : "";
    swatch(kPalettes[family].forward, prefix + "F");
    swatch(kPalettes[family].backward, prefix + "B");
    swatch(kPalettes[family].backward_input, prefix + "b (input grad)");
  }
  swatch(kWeightColour, "W (weight grad)");
  const std::string pair_note = "F&B: split box, forward half | backward half";
  svg.text(legend_x, 41, pair_note, 11, "start");
  width = std::max(width, legend_x + 6.5 * pair_note.size() + kRightMargin);

  const double label_size = std::min(11.0, kRowHeight * 0.5);
  for (const TimedInstruction& timed : result.timeline) {
    const Instruction& in = schedule.ranks[timed.rank][timed.index];
    const double x = x_of(timed.start), y = y_of(timed.rank);
    const double w = (timed.end - timed.start) * scale;
    std::string tip = detail::concat("rank ", timed.rank, ": ", in.to_string(), " [",
                                     num(timed.start), ", ", num(timed.end), ")");
    if (in.op == Op::kWeight) tip += detail::concat(", weights of chunk ", in.chunk, " mb ", in.mb);
    auto box = [&](double bx, double bw, const char* fill, int64_t mb, bool dark) {
      svg.rect(bx, y, bw, kRowHeight, fill, tip);
      // Skip labels that would not fit in the box.
      if (bw >= label_size * 0.7 * std::to_string(mb).size() + 2) {
        svg.text(bx + bw / 2, y + kRowHeight / 2 + label_size * 0.35, std::to_string(mb),
                 label_size, "middle", dark ? "#fff" : "#000");
      }
    };
    const Palette& own = kPalettes[colour_family(layout, timed.rank, in.chunk)];
    switch (in.op) {
      case Op::kForward:
        box(x, w, own.forward, in.mb, false);
        break;
      case Op::kBackward:
        box(x, w, own.backward, in.mb, true);
        break;
      case Op::kBackwardInput:
        box(x, w, own.backward_input, in.mb, true);
        break;
      case Op::kWeight:
        box(x, w, kWeightColour, in.mb, false);
        break;
      case Op::kForwardBackward: {
        const Palette& back = kPalettes[colour_family(layout, timed.rank, in.chunk_b)];
        box(x, w / 2, own.forward, in.mb, false);
        box(x + w / 2, w / 2, back.backward, in.mb_b, true);
        break;
      }
    }
  }
  for (int r = 0; r < schedule.pp; ++r) {
    svg.text(kLeftMargin - 8, y_of(r) + kRowHeight / 2 + 4, detail::concat("rank ", r), 12, "end");
  }

  // Time axis.
  const double axis_y = kTopMargin + rows_height + 4;
  svg.line(x_of(0), axis_y, x_of(makespan), axis_y);
  const double step = tick_step(makespan);
  for (int i = 0; i * step <= makespan + 1e-9; ++i) {
    const double t = i * step;
    svg.line(x_of(t), axis_y, x_of(t), axis_y + 5);
    svg.text(x_of(t), axis_y + 17, num(t), 10);
  }
  svg.text(x_of(makespan / 2), axis_y + 32, "time", 11);
  svg.raw() << "</svg>\n";

  std::ostringstream header;
  header << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\""
         << num(height) << "\" viewBox=\"0 0 " << num(width) << " " << num(height)
         << "\" font-family=\"sans-serif\">\n"
         << "<rect x=\"0\" y=\"0\" width=\"" << num(width) << "\" height=\"" << num(height)
         << "\" fill=\"#fff\"/>\n";
  return header.str() + svg.raw().str();
}

}  // namespace tandem::parallel
