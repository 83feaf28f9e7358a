// Number formatting for everything the window shows: units and sensible precision
// ("90.7 %", "1.2 MB", "38.2 dB", "2,140 img/s", "0:21"). NaN prints as an en dash.
#pragma once

#include <QString>

namespace quantscope {

QString formatPercent(double fraction, int decimals = 1); // 0.907 -> "90.7 %"
QString formatBytes(double bytes);                        // 1234567 -> "1.18 MB" (1024-based, as the CLI)
QString formatDb(double db);                              // 38.24 -> "38.2 dB"
QString formatRate(double imagesPerSecond);               // 2140.3 -> "2,140 img/s"
QString formatCount(double n);                            // 60000 -> "60,000"
QString formatClock(double seconds);                      // 21 -> "0:21", 3725 -> "1:02:05"
QString formatSeconds(double seconds);                    // 38.2 -> "38 s", 125 -> "2 min 05 s"
QString formatScale(double v);                            // 0.004123 -> "0.00412" (3 significant digits)
QString formatLoss(double v);                             // 0.41234 -> "0.412"
QString noValueText();                                    // "–"

} // namespace quantscope
