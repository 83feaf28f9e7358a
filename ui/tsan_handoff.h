// ThreadSanitizer and Qt's queued connections. A signal from a worker thread to the GUI thread
// (and a request the other way, and QMetaObject::invokeMethod(qApp, ...) from the analysis
// threads) is posted as an event under a QMutex that Qt 6 builds on a raw futex; libQt6Core is
// not instrumented, so TSan never sees that the sender's writes (the Dataset it loaded, the
// argument copies) happen before the receiver's slot, nor the order of Qt's own post-event lists.
// Under -fsanitize=thread QS_TSAN_HANDOFF() is called before and after each emit/post, and
// TsanHandoffFilter when a thread dispatches a QEvent::MetaCall; each acquires and releases one
// address, so TSan orders these points as Qt's mutex does. Outside TSan builds both are nothing.
// (core/tensor/parallel.h does the same for TBB's parallel loops.)
#pragma once

#include <QEvent>
#include <QObject>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
namespace quantscope::tsan {
inline char queuedHandoff = 0; // a synchronisation address only
} // namespace quantscope::tsan
#define QS_TSAN_HANDOFF() (__tsan_acquire(&quantscope::tsan::queuedHandoff), __tsan_release(&quantscope::tsan::queuedHandoff))
#else
#define QS_TSAN_HANDOFF() ((void)0)
#endif

namespace quantscope {

// Installed on qApp (every object of the GUI thread) and on the training worker: acquires the
// hand-off before each queued call is delivered. Filters nothing.
class TsanHandoffFilter final : public QObject {
public:
    using QObject::QObject;
    bool eventFilter([[maybe_unused]] QObject* watched, [[maybe_unused]] QEvent* event) override
    {
#if defined(__SANITIZE_THREAD__)
        if (event->type() == QEvent::MetaCall) {
            __tsan_acquire(&tsan::queuedHandoff);
            __tsan_release(&tsan::queuedHandoff);
        }
#endif
        return false;
    }
};

// Installs the filters in a ThreadSanitizer build; nothing otherwise.
inline void installTsanHandoff([[maybe_unused]] QObject* target)
{
#if defined(__SANITIZE_THREAD__)
    target->installEventFilter(new TsanHandoffFilter(target));
#endif
}

} // namespace quantscope
