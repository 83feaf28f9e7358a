#include "format_text.h"

#include "util/byte_size.h"

#include <QLocale>

#include <cmath>

namespace quantscope {

namespace {
const QLocale& english()
{
    static const QLocale l(QLocale::English, QLocale::UnitedStates);
    return l;
}
bool bad(double v) { return !std::isfinite(v); }
} // namespace

QString noValueText() { return QStringLiteral("\u2013"); }

QString formatPercent(double fraction, int decimals)
{
    if (bad(fraction)) return noValueText();
    return QString::number(100.0 * fraction, 'f', decimals) + QStringLiteral(" %");
}

QString formatBytes(double bytes)
{
    if (bad(bytes) || bytes < 0) return noValueText();
    return QString::fromStdString(formatByteSize(static_cast<std::uint64_t>(std::llround(bytes)))); // as the CLI writes sizes
}

QString formatDb(double db)
{
    if (bad(db)) return noValueText();
    return QString::number(db, 'f', 1) + QStringLiteral(" dB");
}

QString formatCount(double n)
{
    if (bad(n)) return noValueText();
    return english().toString(static_cast<qlonglong>(std::llround(n)));
}

QString formatRate(double imagesPerSecond)
{
    if (bad(imagesPerSecond)) return noValueText();
    return formatCount(imagesPerSecond) + QStringLiteral(" img/s");
}

QString formatClock(double seconds)
{
    if (bad(seconds) || seconds < 0 || seconds > 359999) return QStringLiteral("--:--");
    const long s = std::lround(seconds);
    if (s >= 3600)
        return QStringLiteral("%1:%2:%3")
            .arg(s / 3600)
            .arg((s / 60) % 60, 2, 10, QLatin1Char('0'))
            .arg(s % 60, 2, 10, QLatin1Char('0'));
    return QStringLiteral("%1:%2").arg(s / 60).arg(s % 60, 2, 10, QLatin1Char('0'));
}

QString formatSeconds(double seconds)
{
    if (bad(seconds) || seconds < 0) return noValueText();
    if (seconds < 10) return QString::number(seconds, 'f', 1) + QStringLiteral(" s");
    const long s = std::lround(seconds);
    if (s < 60) return QString::number(s) + QStringLiteral(" s");
    if (s < 3600) return QStringLiteral("%1 min %2 s").arg(s / 60).arg(s % 60, 2, 10, QLatin1Char('0'));
    return QStringLiteral("%1 h %2 min").arg(s / 3600).arg((s / 60) % 60, 2, 10, QLatin1Char('0'));
}

QString formatScale(double v)
{
    if (bad(v)) return noValueText();
    return QString::number(v, 'g', 3);
}

QString formatLoss(double v)
{
    if (bad(v)) return noValueText();
    // four significant digits once three decimals stop meaning anything (a run that blew up
    // printed "10713662395163606.000" in the status bar)
    return std::fabs(v) >= 1e5 ? QString::number(v, 'g', 4) : QString::number(v, 'f', 3);
}

} // namespace quantscope
