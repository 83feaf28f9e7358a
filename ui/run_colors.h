// The colours that tell runs apart: one per run, the same in every chart and in the runs table's
// # swatch, distinct for many runs, readable on white.
#pragma once

#include <QColor>

namespace quantscope {

struct RunRecord;

// The i-th colour of the charts' palette (eight, readable on white; it repeats).
QColor paletteColor(int index);
// Run `id`'s colour (ids from 1): the same in every chart and in the runs table, whatever else is
// selected. Runs 1-8 take the palette; later runs hues a golden angle apart, in three bands of
// saturation and lightness that take turns, never lighter than the palette's lightest colour.
// Any two of the first 40 runs differ clearly (the colours repeated from run 17 on).
QColor runColor(int id);
QColor runColor(const RunRecord& run);

} // namespace quantscope
