// ThreadSanitizer and Qt's queued connections. A signal from a worker thread to the GUI thread
// (and a request the other way, and QMetaObject::invokeMethod(qApp, ...) from the analysis
// threads) is posted as an event under a QMutex that Qt 6 builds on a raw futex; libQt6Core is
// not instrumented, so TSan never sees that the sender's writes (the Dataset it loaded, the
// argument copies) happen before the receiver's slot, nor the order of Qt's own post-event lists.
// Under -fsanitize=thread QS_TSAN_HANDOFF() is called before and after each emit/post, and
// TsanHandoffFilter when a thread dispatches a QEvent::MetaCall; each acquires and releases one
// address, so TSan orders these points as Qt's mutex does. Outside TSan builds both are nothing.
// QThread::wait() joins the same way (Qt's futex, not pthread_join, which TSan would see): the
// training thread's end is stated by installTsanJoin(thread), a QS_TSAN_HANDOFF() in that thread
// once its event loop has returned (QThread::finished, a direct connection: it runs in the ending
// thread), and QS_TSAN_HANDOFF() after wait() in the joining thread; only QuantScope's QThreads.
// (core/tensor/parallel.h does the same for TBB's parallel loops.)
#pragma once

#include <QEvent>
#include <QObject>
#include <QThread>

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

// States a QThread's end to TSan: the thread releases the hand-off as its last act that runs
// QuantScope's code (QThread::finished, emitted in that thread after its event loop returned);
// the joiner calls QS_TSAN_HANDOFF() after thread->wait(). Nothing outside TSan builds.
inline void installTsanJoin([[maybe_unused]] QThread* thread)
{
#if defined(__SANITIZE_THREAD__)
    QObject::connect(thread, &QThread::finished, thread, [] { QS_TSAN_HANDOFF(); }, Qt::DirectConnection);
#endif
}

} // namespace quantscope
