// ScopeExit: runs a callable when the scope ends, however it ends (return, exception). For
// settings that hold for one call only, such as a layer's sink or source set around its forward
// or backward (Model).
#pragma once

#include <utility>

namespace quantscope {

template <class F>
class ScopeExit {
public:
    explicit ScopeExit(F f) : m_f(std::move(f)) {}
    ~ScopeExit() { m_f(); }
    ScopeExit(const ScopeExit&) = delete;
    ScopeExit& operator=(const ScopeExit&) = delete;

private:
    F m_f;
};

} // namespace quantscope
