// What a call threw, by QuantScope's error type, for tests that check both the type and the
// message of an error (the readers' broken-file tests): {"IoError" | "FormatError" |
// "ConfigError" | "std::exception (<type>)" | "no error", what()}.
#pragma once

#include "util/errors.h"

#include <QString>

#include <exception>
#include <typeinfo>

namespace quantscope::testing {

struct Caught {
    QString type, message;
};

template <typename F>
inline Caught catchError(F&& f)
{
    try {
        f();
    } catch (const IoError& e) {
        return {"IoError", e.what()};
    } catch (const FormatError& e) {
        return {"FormatError", e.what()};
    } catch (const ConfigError& e) {
        return {"ConfigError", e.what()};
    } catch (const std::exception& e) {
        return {QString("std::exception (%1)").arg(typeid(e).name()), e.what()};
    }
    return {"no error", {}};
}

} // namespace quantscope::testing
