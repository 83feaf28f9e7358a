#include "gui_call.h"

#include "tsan_handoff.h"

#include <QCoreApplication>
#include <QEvent>
#include <QObject>

#include <utility>

namespace quantscope {

namespace {

class GuiCallEvent final : public QEvent {
public:
    explicit GuiCallEvent(std::function<void()> f) : QEvent(type()), fn(std::move(f)) {}
    static QEvent::Type type()
    {
        static const auto t = static_cast<QEvent::Type>(QEvent::registerEventType());
        return t;
    }
    std::function<void()> fn;
};

// Lives in the GUI thread; runs each GuiCallEvent posted to it. The event (and with it the
// function and its captures) is deleted by the GUI thread after delivery.
class GuiCallReceiver final : public QObject {
public:
    bool event(QEvent* e) override
    {
        if (e->type() != GuiCallEvent::type()) return QObject::event(e);
        QS_TSAN_HANDOFF(); // the poster's writes happen before this call
        static_cast<GuiCallEvent*>(e)->fn();
        return true;
    }
};

QObject* receiver()
{
    // Made on first use (any thread) and pushed to the application's thread; one per process.
    static QObject* const r = [] {
        auto* o = new GuiCallReceiver;
        o->moveToThread(QCoreApplication::instance()->thread());
        return o;
    }();
    return r;
}

} // namespace

void postToGuiThread(std::function<void()> fn)
{
    if (!QCoreApplication::instance() || !fn) return;
    auto* e = new GuiCallEvent(std::move(fn));
    QS_TSAN_HANDOFF();
    QCoreApplication::postEvent(receiver(), e);
}

} // namespace quantscope
