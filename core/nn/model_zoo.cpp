#include "nn/model_zoo.h"

#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
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
        {"resnet8", "ResNet-8: conv 16 3x3 + BN, three residual basic blocks (16, 32, 64 channels, the last two "
                    "stride 2 with 1x1 projection shortcuts), global average pool, fc 10; 77,754 parameters"},
        {"mobilenet-tiny", "MobileNet-tiny: conv 16 3x3 + BN + ReLU6, four depthwise-separable blocks (depthwise 3x3 "
                           "+ BN + ReLU6, pointwise 1x1 + BN + ReLU6; 32, 64, 128, 128 channels), global average "
                           "pool, fc 10; 31,946 parameters"},
    };
    return presets;
}

namespace {

// ResNet basic block (common.py BasicBlock): conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut
// (identity, or conv1x1(stride)-BN when the shape changes), Add, ReLU. Returns the block's output.
std::size_t basicBlock(Model& m, const std::string& p, std::size_t in, std::size_t cin, std::size_t cout,
                       std::size_t stride)
{
    std::size_t y = m.add(std::make_unique<Conv2d>(p + ".conv1", cin, cout, 3, stride, 1, 1, false), {in});
    y = m.add(std::make_unique<BatchNorm2d>(p + ".bn1", cout), {y});
    y = m.add(std::make_unique<ReLU>(p + ".relu1"), {y});
    y = m.add(std::make_unique<Conv2d>(p + ".conv2", cout, cout, 3, 1, 1, 1, false), {y});
    y = m.add(std::make_unique<BatchNorm2d>(p + ".bn2", cout), {y});
    std::size_t shortcut = in;
    if (stride != 1 || cin != cout) {
        shortcut = m.add(std::make_unique<Conv2d>(p + ".shortcut", cin, cout, 1, stride, 0, 1, false), {in});
        shortcut = m.add(std::make_unique<BatchNorm2d>(p + ".shortcut_bn", cout), {shortcut});
    }
    y = m.add(std::make_unique<Add>(p + ".add"), {y, shortcut});
    return m.add(std::make_unique<ReLU>(p + ".relu2"), {y});
}

// MobileNet block (common.py DepthwiseSeparable): depthwise conv3x3(stride)-BN-ReLU6, pointwise
// conv1x1-BN-ReLU6.
void separableBlock(Model& m, const std::string& p, std::size_t cin, std::size_t cout, std::size_t stride)
{
    m.add(std::make_unique<Conv2d>(p + ".dw", cin, cin, 3, stride, 1, cin, false));
    m.add(std::make_unique<BatchNorm2d>(p + ".bn1", cin));
    m.add(std::make_unique<ReLU6>(p + ".relu1"));
    m.add(std::make_unique<Conv2d>(p + ".pw", cin, cout, 1, 1, 0, 1, false));
    m.add(std::make_unique<BatchNorm2d>(p + ".bn2", cout));
    m.add(std::make_unique<ReLU6>(p + ".relu2"));
}

} // namespace

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
    } else if (preset == "resnet8") {
        if (H < 4 || W < 4) throw ConfigError("resnet8 needs images of at least 4x4");
        add(new Conv2d("conv1", C, 16, 3, 1, 1, 1, false));
        add(new BatchNorm2d("bn1", 16));
        std::size_t x = m->add(std::make_unique<ReLU>("relu"));
        x = basicBlock(*m, "layer1", x, 16, 16, 1);
        x = basicBlock(*m, "layer2", x, 16, 32, 2);
        basicBlock(*m, "layer3", x, 32, 64, 2);
        add(new GlobalAvgPool2d("pool"));
        add(new Flatten("flatten"));
        add(new Linear("fc", 64, classes));
    } else if (preset == "mobilenet-tiny") {
        if (H < 4 || W < 4) throw ConfigError("mobilenet-tiny needs images of at least 4x4");
        add(new Conv2d("conv1", C, 16, 3, 1, 1, 1, false));
        add(new BatchNorm2d("bn1", 16));
        add(new ReLU6("relu1"));
        separableBlock(*m, "blocks.0", 16, 32, 1);
        separableBlock(*m, "blocks.1", 32, 64, 2);
        separableBlock(*m, "blocks.2", 64, 128, 2);
        separableBlock(*m, "blocks.3", 128, 128, 1);
        add(new GlobalAvgPool2d("pool"));
        add(new Flatten("flatten"));
        add(new Linear("fc", 128, classes));
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
