// Runs a function in the GUI thread's event loop, posted from any thread (the analysis views'
// worker threads report progress and results this way).
#pragma once

#include <functional>

namespace quantscope {

// Queues fn to run in the thread of QCoreApplication::instance() (the GUI thread) and returns at
// once; fn runs there once control returns to its event loop, and is destroyed there too.
//
// Unlike QMetaObject::invokeMethod(qApp, functor), the calling thread never touches fn again once
// it is queued: invokeMethod's functor object is reference counted by the posting call and by the
// queued event, and whichever thread drops the last reference destroys it, so the poster could
// destroy a functor (and the values it captured) that the GUI thread had just run. Qt's count is
// atomic, so that is ordered, but inside libQt6Core, where ThreadSanitizer cannot see it
// (tst_gui_analysis under TSan, 2026-11-30: the sensitivity worker's delete of its progress
// functor against the GUI thread's read of its QPointer). Under TSan the post and the call are
// ordered by QS_TSAN_HANDOFF() (tsan_handoff.h). Dropped without running if the application
// object is gone.
void postToGuiThread(std::function<void()> fn);

} // namespace quantscope
