// Named model presets: seed-cnn, seed-cnn-bn, lenet5, mlp (plain stacks) and resnet8, mobilenet-tiny
// (graphs, defined exactly as ../shared/reference/common.py so the two trainers can be compared).
#pragma once

#include "nn/model.h"

#include <memory>
#include <string>
#include <vector>

namespace quantscope {

struct ModelPresetInfo {
    const char* name;
    const char* description;
};

const std::vector<ModelPresetInfo>& modelPresets();

// Builds an initialised preset for inputs of (channels, height, width) and `classes` outputs.
// Throws ConfigError for an unknown name or an input the preset cannot take.
std::unique_ptr<Model> makeModel(const std::string& preset, std::size_t channels = 1, std::size_t height = 28,
                                 std::size_t width = 28, std::size_t classes = 10, std::uint64_t seed = 1);

} // namespace quantscope
