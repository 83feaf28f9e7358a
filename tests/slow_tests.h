// Test helper: the sanitizer test presets (CMakePresets.json "asan", "tsan") set QS_SANITIZER_RUN;
// the whole-model Fashion-MNIST trainings, 10-50x slower under AddressSanitizer, skip there and run
// in the release suite. Timing bounds stay asserted under sanitizers, multiplied by
// sanitizerSlowdown() (the instrumented GUI thread runs about 2-5x slower).
#pragma once

#include <QtGlobal>

#define QS_SKIP_UNDER_SANITIZERS()                                                                         \
    do {                                                                                                   \
        if (qEnvironmentVariableIsSet("QS_SANITIZER_RUN"))                                                 \
            QSKIP("Fashion-MNIST model training is too slow under sanitizers; the release suite runs it"); \
    } while (0)

namespace quantscope::testing {
// 1 in the release suite; kSanitizerSlowdown under QS_SANITIZER_RUN=1 (a bound on what ASan/UBSan
// and TSan cost the GUI thread, measured in the asan and tsan presets).
constexpr double kSanitizerSlowdown = 5.0;
inline double sanitizerSlowdown() { return qEnvironmentVariableIsSet("QS_SANITIZER_RUN") ? kSanitizerSlowdown : 1.0; }
} // namespace quantscope::testing
