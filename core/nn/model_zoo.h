// Named model presets: seed-cnn, seed-cnn-bn, lenet5, mlp (plain stacks) and resnet8, mobilenet-tiny
// (graphs, defined exactly as ../shared/reference/common.py so the two trainers can be compared).
#pragma once

#include "nn/model.h"

#include <functional>
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

// What a Trainer trains when it does not build a preset by name (a model file, a preset with saved
// weights; io/model_source.h makes them): called once with the dataset's input shape (C, H, W),
// its class count and the seed. Throws ConfigError / FormatError / IoError naming the source.
using ModelFactory = std::function<std::unique_ptr<Model>(const Shape& input, std::size_t classes, std::uint64_t seed)>;

} // namespace quantscope
