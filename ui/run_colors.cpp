#include "run_colors.h"

#include "run_record.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace quantscope {

namespace {

const QColor kPalette[] = {QColor(0x1f, 0x77, 0xb4), QColor(0xd6, 0x27, 0x28), QColor(0x2c, 0xa0, 0x2c), QColor(0x94, 0x67, 0xbd),
                           QColor(0xff, 0x7f, 0x0e), QColor(0x8c, 0x56, 0x4b), QColor(0xe3, 0x77, 0xc2), QColor(0x17, 0xbe, 0xcf)};
constexpr int kPaletteSize = static_cast<int>(std::size(kPalette));

// WCAG relative luminance (0 black .. 1 white) of an sRGB colour.
double luminance(const QColor& c)
{
    const auto linear = [](double v) { return v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * linear(c.redF()) + 0.7152 * linear(c.greenF()) + 0.0722 * linear(c.blueF());
}

// The palette's lightest colour (a cyan line on white): no run colour is lighter.
double maxLuminance()
{
    static const double max = [] {
        double m = 0;
        for (const QColor& c : kPalette) m = std::max(m, luminance(c));
        return m;
    }();
    return max;
}

} // namespace

QColor paletteColor(int index) { return kPalette[std::max(0, index) % kPaletteSize]; }

QColor runColor(int id)
{
    const int index = std::max(0, id - 1);
    if (index < kPaletteSize) return kPalette[index];
    // After the palette: three bands (saturation, lightness) in turn, mid, dark, light. Within a
    // band the hue steps by the golden angle, so each new hue falls in the widest gap left; the
    // bands start 120 degrees apart, so consecutive runs differ in hue as well as in lightness.
    // (Runs 9-16 were darker shades of 1-8, and run 17 was run 1's colour again.)
    struct Band {
        double saturation, lightness;
    };
    constexpr Band kBands[] = {{0.65, 0.42}, {0.70, 0.32}, {1.00, 0.60}};
    constexpr int kBandCount = static_cast<int>(std::size(kBands));
    constexpr double kGoldenAngle = 137.50776405003785; // 360 (1 - 1/phi)
    constexpr double kFirstHue = 280; // of 0, 20, ..., 340 the start that keeps the first 40 runs furthest apart
    const int k = index - kPaletteSize;
    const Band& band = kBands[k % kBandCount];
    const double hue = std::fmod(kFirstHue + (k / kBandCount) * kGoldenAngle + (k % kBandCount) * 120.0, 360.0);
    double lightness = band.lightness;
    QColor c = QColor::fromHslF(float(hue / 360.0), float(band.saturation), float(lightness));
    // Yellows and greens at the light band's lightness are pale on white: darkened until they are
    // no lighter than the palette's cyan.
    while (luminance(c) > maxLuminance() && lightness > 0.05) {
        lightness -= 0.01;
        c = QColor::fromHslF(float(hue / 360.0), float(band.saturation), float(lightness));
    }
    return QColor(c.rgb()); // 8 bits a channel, as the swatch and the chart draw it
}

QColor runColor(const RunRecord& run) { return runColor(run.id); }

} // namespace quantscope
