// Draws a simulated pipeline schedule as an SVG timeline in the style of the DualPipe README
// figure: one row per rank, time to the right, one labelled rectangle per instruction.
#pragma once

#include <string>

#include "parallelism/schedule.h"
#include "parallelism/schedule_simulator.h"

namespace tandem::parallel {

// `result` must come from simulate(schedule, ...). Each rectangle is labelled with its
// micro-batch. Colours: one hue per direction (DualPipe) or per leg of the V (DualPipeV: chunk 0
// going down, chunk 1 coming back), forward light, full backward dark, input-only backward b a
// shade between, W grey; an overlapped F&B pair is split into a forward half and a backward half.
// A legend sits above the rows and a time axis below.
std::string schedule_svg(const Schedule& schedule, const SimulationResult& result);

}  // namespace tandem::parallel
