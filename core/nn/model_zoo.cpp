#include "nn/model_zoo.h"

#include "nn/activations.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"

namespace quantscope {

const std::vector<ModelPresetInfo>& modelPresets()
{
    static const std::vector<ModelPresetInfo> presets = {
        {"seed-cnn", "conv 32 3x3, conv 64 3x3, maxpool, dropout, fc 128, fc 10 (the classic MNIST CNN)"},
        {"seed-cnn-bn", "seed-cnn with BatchNorm after each convolution"},
        {"lenet5", "LeNet-5: conv 6 5x5, pool, conv 16 5x5, pool, fc 120, fc 84, fc 10"},
        {"mlp", "multilayer perceptron 784-256-128-10"},
    };
    return presets;
}

std::unique_ptr<Model> makeModel(const std::string& preset, std::size_t C, std::size_t H, std::size_t W,
                                 std::size_t classes, std::uint64_t seed)
{
    auto m = std::make_unique<Model>(preset, Shape{C, H, W});
    auto add = [&](auto* layer) { m->add(LayerPtr(layer)); };
    if (preset == "seed-cnn" || preset == "seed-cnn-bn") {
        const bool bn = preset == "seed-cnn-bn";
        if (H < 6 || W < 6) throw ConfigError(preset + " needs images of at least 6x6");
        add(new Conv2d("conv1", C, 32, 3));
        if (bn) add(new BatchNorm2d("bn1", 32));
        add(new ReLU("relu1"));
        add(new Conv2d("conv2", 32, 64, 3));
        if (bn) add(new BatchNorm2d("bn2", 64));
        add(new ReLU("relu2"));
        add(new MaxPool2d("pool", 2));
        add(new Dropout("dropout1", 0.25f));
        add(new Flatten("flatten"));
        add(new Linear("fc1", 64 * ((H - 4) / 2) * ((W - 4) / 2), 128));
        add(new ReLU("relu3"));
        add(new Dropout("dropout2", 0.5f));
        add(new Linear("fc2", 128, classes));
    } else if (preset == "lenet5") {
        if (H < 12 || W < 12) throw ConfigError("lenet5 needs images of at least 12x12");
        add(new Conv2d("conv1", C, 6, 5, 1, 2));
        add(new ReLU("relu1"));
        add(new MaxPool2d("pool1", 2));
        add(new Conv2d("conv2", 6, 16, 5));
        add(new ReLU("relu2"));
        add(new MaxPool2d("pool2", 2));
        add(new Flatten("flatten"));
        add(new Linear("fc1", 16 * ((H / 2 - 4) / 2) * ((W / 2 - 4) / 2), 120));
        add(new ReLU("relu3"));
        add(new Linear("fc2", 120, 84));
        add(new ReLU("relu4"));
        add(new Linear("fc3", 84, classes));
    } else if (preset == "mlp") {
        add(new Flatten("flatten"));
        add(new Linear("fc1", C * H * W, 256));
        add(new ReLU("relu1"));
        add(new Linear("fc2", 256, 128));
        add(new ReLU("relu2"));
        add(new Linear("fc3", 128, classes));
    } else {
        std::string names;
        for (const auto& p : modelPresets()) names += std::string(names.empty() ? "" : ", ") + p.name;
        throw ConfigError("unknown model '" + preset + "' (known: " + names + ")");
    }
    add(new LogSoftmax("log_softmax"));
    m->outputShape(1); // validates the chain
    m->initParams(seed);
    return m;
}

} // namespace quantscope
