// A model file whose mixed-precision (fp16) training overflows on every step while its loss stays
// finite: fc1 is all zeros, so fc2 and fc3 see zeros and the logits are fc3's bias (loss ln 10);
// backwards, fc3's and fc2's weights of +-6e4 (finite in fp16) multiply the gradient past fp16's
// 65504 at any loss scale >= 1, so dynamic loss scaling skips every step. For the tests of
// TrainConfig::maxSkippedSteps through the CLI and the GUI.
#pragma once

#include "data/normalization.h"
#include "io/exported_model.h"
#include "io/qsm.h"
#include "nn/activations.h"
#include "nn/linear.h"
#include "nn/model.h"

#include <string>

namespace fixtures {

inline void writeDivergingModel(const std::string& path, std::size_t side = 28)
{
    using namespace quantscope;
    const std::size_t in = side * side, hidden = 16;
    Model m("diverging", Shape{1, side, side});
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc1", in, hidden));
    m.add(std::make_unique<Linear>("fc2", hidden, hidden));
    m.add(std::make_unique<Linear>("fc3", hidden, 10));
    m.add(std::make_unique<LogSoftmax>("log_softmax"));
    m.initParams(1);
    std::vector<Param*> p = m.params(); // fc1 w, b, fc2 w, b, fc3 w, b
    p[0]->value.fill(0.0f);
    p[1]->value.fill(0.0f);
    p[2]->value.fill(6.0e4f);
    p[3]->value.fill(0.0f);
    for (std::size_t i = 0; i < p[4]->value.numel(); ++i) p[4]->value[i] = (i / hidden) % 2 ? -6.0e4f : 6.0e4f;
    p[5]->value.fill(0.0f);
    writeQsm(path, exportFloatModel(m, "diverging", Normalization::identity(1), {}));
}

} // namespace fixtures
