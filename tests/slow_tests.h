// Test helper: the sanitizer test preset (CMakePresets.json "asan") sets QS_SANITIZER_RUN; the
// whole-model Fashion-MNIST trainings, 10-50x slower under AddressSanitizer, skip there and run
// in the release suite.
#pragma once

#include <QtGlobal>

#define QS_SKIP_UNDER_SANITIZERS()                                                                         \
    do {                                                                                                   \
        if (qEnvironmentVariableIsSet("QS_SANITIZER_RUN"))                                                 \
            QSKIP("Fashion-MNIST model training is too slow under sanitizers; the release suite runs it"); \
    } while (0)
