// Core's error messages as the window shows them. Core words its messages for the CLI ("--resize
// 8x8 reads them at its size"); a window user sets those options in the docks, so the flags are
// named as the fields that set them ("set Resize to 8x8 in the Dataset dock"). The CLI's text is
// untouched: only the window's copy is reworded.
#pragma once

#include <QString>

#include <exception>

namespace quantscope {

QString coreMessage(const QString& cliText);
QString coreMessage(const std::exception& e); // coreMessage(e.what(), as UTF-8)

} // namespace quantscope
