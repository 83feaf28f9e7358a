// Central-difference gradient checks for every layer, a whole graph model and every loss. The
// PyTorch reference vectors are in tst_layers_golden.cpp; the fast kernels against their
// reference paths and thread-count determinism in tst_layer_kernels.cpp.
#include "data/dataset.h"
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/channel_ops.h"
#include "nn/concat.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model.h"
#include "nn/mul.h"
#include "nn/pad.h"
#include "nn/pointwise.h"
#include "nn/groupnorm.h"
#include "nn/layernorm2d.h"
#include "nn/channel_max.h"
#include "nn/prelu.h"
#include "train/loss.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>

using namespace quantscope;
using namespace quantscope::testing;

namespace {

// Central differences on float layers: L = sum(r * y) is accumulated in double and the step is
// the float-representable difference (x + eps) - (x - eps). Rounding of y (~1e-7 relative)
// divided by 2 eps gives ~1e-4 absolute noise; curvature (BatchNorm, log-softmax) adds O(eps^2).
constexpr float kGradEps = 1e-2f;
constexpr double kGradAtol = 2e-3;
constexpr double kGradRtol = 1e-2;
// A whole model with a ReLU inside. Every ReLU input keeps kModelReluMargin from the kink; a step
// of kModelGradEps on any parameter moves it by less than that (stem weights: eps |x| times the
// sum of 27 conv weights below 1/sqrt(27), about 5 eps; the others less), so no step crosses 0.
// A step of kGradEps would need a margin that random graphs of this size never have. The float
// noise of the smaller step (~1e-7 / 2e-3) stays far under kGradAtol.
constexpr float kModelGradEps = 1e-3f;
constexpr float kModelReluMargin = 1e-2f;
// Max-pooling inputs are spaced this far apart, so a +-eps step never moves the argmax.
constexpr float kDistinctSpacing = 0.05f;
// ReLU inputs keep at least this distance from the kink at 0 (ReLU6: and from the one at 6).
constexpr float kReluMargin = 0.1f;
// Losses return float means; their steps can be smaller since they are cheap and smooth.
constexpr float kLossEps = 1e-2f;
constexpr double kLossGradAtol = 1e-4;
constexpr double kLossGradRtol = 1e-2;

// Every element distinct and at least kDistinctSpacing from every other (a shuffled grid).
Tensor distinctTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    const std::vector<std::size_t> perm = seededPermutation(t.numel(), rng.next());
    for (std::size_t i = 0; i < t.numel(); ++i)
        t[i] = (static_cast<float>(perm[i]) - static_cast<float>(t.numel()) / 2.0f) * kDistinctSpacing;
    return t;
}

// |x| in [kReluMargin, 1], random sign.
Tensor awayFromZeroTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    for (float& v : t.values()) v = (rng.uniform() < 0.5f ? -1.0f : 1.0f) * rng.uniform(kReluMargin, 1.0f);
    return t;
}

// Uniform in [-1, 7] (both sides of both ReLU6 kinks), at least kReluMargin from 0 and from 6.
Tensor awayFromRelu6KinksTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    for (float& v : t.values()) {
        v = rng.uniform(-1.0f, 7.0f);
        for (const float kink : {0.0f, 6.0f})
            if (std::abs(v - kink) < kReluMargin) v = kink + (v < kink ? -kReluMargin : kReluMargin);
    }
    return t;
}

// Uniform in [-5, 5] (both sides of Hardsigmoid's and Hardswish's bends at -3 and 3, of the
// ReLU-like kink at 0 and of the Hardtanh rows' bounds), at least kReluMargin from each bend.
Tensor awayFromPointwiseBendsTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    for (float& v : t.values()) {
        v = rng.uniform(-5.0f, 5.0f);
        for (const float kink : {-3.0f, -2.0f, -1.0f, 0.0f, 1.0f, 1.5f, 3.0f})
            if (std::abs(v - kink) < kReluMargin) v = kink + (v < kink ? -kReluMargin : kReluMargin);
    }
    return t;
}

double dot(const Tensor& r, const Tensor& y)
{
    double s = 0.0;
    for (std::size_t i = 0; i < y.numel(); ++i) s += static_cast<double>(r[i]) * y[i];
    return s;
}

// Compares analytic[i] with the central difference of loss() in values[i], for every i.
// Returns "" when all agree, else the worst element.
std::string numericCheck(const std::string& what, float* values, const float* analytic, std::size_t n, float eps,
                         double atol, double rtol, const std::function<double()>& loss)
{
    double worst = 0.0, worstNum = 0.0, worstAna = 0.0;
    std::size_t worstAt = 0, bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const float orig = values[i];
        const float up = orig + eps, down = orig - eps;
        values[i] = up;
        const double lp = loss();
        values[i] = down;
        const double lm = loss();
        values[i] = orig;
        const double num = (lp - lm) / (static_cast<double>(up) - static_cast<double>(down));
        const double ana = analytic[i];
        const double excess = std::abs(num - ana) - (atol + rtol * std::max(std::abs(num), std::abs(ana)));
        if (excess > 0.0 && (bad++ == 0 || excess > worst)) {
            worst = excess;
            worstAt = i;
            worstNum = num;
            worstAna = ana;
        }
    }
    if (bad == 0) return {};
    return what + ": " + std::to_string(bad) + " of " + std::to_string(n) + " gradients differ; worst at " +
           std::to_string(worstAt) + ": analytic " + std::to_string(worstAna) + ", numeric " + std::to_string(worstNum);
}

// A layer under a gradient check, with an input that keeps it away from kinks and ties.
struct GradSetup {
    LayerPtr layer;
    Tensor x;
    Tensor x2; // second input of a two-input layer (Add, Mul, Concat); empty otherwise
    Tensor x3; // third input (a Concat of three); empty otherwise
};

GradSetup makeGradSetup(const QString& row, Rng& rng)
{
    GradSetup s;
    if (row == "conv2d_k3_s1_p0") {
        s.layer = std::make_unique<Conv2d>("conv", 2, 3, 3);
        s.x = randomTensor({2, 2, 6, 6}, rng);
    } else if (row == "conv2d_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 2, 3, 3, 2, 1);
        s.x = randomTensor({2, 2, 7, 7}, rng);
    } else if (row == "conv2d_k5_s1_p2") {
        s.layer = std::make_unique<Conv2d>("conv", 1, 2, 5, 1, 2);
        s.x = randomTensor({2, 1, 6, 6}, rng);
    } else if (row == "conv2d_direct_k3_s1_p1_bias") { // the direct stride-1 kernels (conv_direct.h)
        s.layer = std::make_unique<Conv2d>("conv", 8, 3, 3, 1, 1, 1, true);
        s.x = randomTensor({3, 8, 5, 6}, rng);
    } else if (row == "conv2d_direct_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 8, 3, 3, 2, 1, 1, true);
        s.x = randomTensor({2, 8, 6, 7}, rng);
    } else if (row == "conv2d_direct_k5_s1_p2") {
        s.layer = std::make_unique<Conv2d>("conv", 9, 2, 5, 1, 2, 1, false);
        s.x = randomTensor({2, 9, 4, 5}, rng);
    } else if (row == "conv2d_g2_k3_s1_p1_bias") {
        s.layer = std::make_unique<Conv2d>("conv", 4, 6, 3, 1, 1, 2, true);
        s.x = randomTensor({2, 4, 5, 5}, rng);
    } else if (row == "conv2d_g2_k3_s2_p0_nobias") {
        s.layer = std::make_unique<Conv2d>("conv", 4, 2, 3, 2, 0, 2, false);
        s.x = randomTensor({2, 4, 7, 6}, rng);
    } else if (row == "conv2d_g3_k1_channel_multiplier") { // groups == Cin but Cout = 2 Cin: not depthwise
        s.layer = std::make_unique<Conv2d>("conv", 3, 6, 1, 1, 0, 3, true);
        s.x = randomTensor({2, 3, 4, 4}, rng);
    } else if (row == "depthwise_k3_s1_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 3, 3, 3, 1, 1, 3, false);
        s.x = randomTensor({2, 3, 5, 6}, rng);
    } else if (row == "depthwise_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 3, 3, 3, 2, 1, 3, false);
        s.x = randomTensor({2, 3, 7, 6}, rng);
    } else if (row == "depthwise_k3_s2_p1_bias") {
        s.layer = std::make_unique<Conv2d>("conv", 2, 2, 3, 2, 1, 2, true);
        s.x = randomTensor({2, 2, 6, 7}, rng);
    } else if (row.startsWith("conv2d_geometry_")) { // windows that are not square: im2col + GEMM
        ConvGeometry g;
        std::size_t cin = 3, cout = 4, groups = 1;
        if (row == "conv2d_geometry_k1x7_p0_3") {
            g = {1, 7, 1, 1, 0, 3, 0, 3, 1, 1};
        } else if (row == "conv2d_geometry_k7x1_p3_0_c8") { // 8 channels: the direct kernels' size, not their shape
            g = {7, 1, 1, 1, 3, 0, 3, 0, 1, 1};
            cin = 8;
        } else if (row == "conv2d_geometry_k3_s2x1_p1") {
            g = {3, 3, 2, 1, 1, 1, 1, 1, 1, 1};
        } else if (row == "conv2d_geometry_k3_d2_p2") {
            g = {3, 3, 1, 1, 2, 2, 2, 2, 2, 2};
        } else if (row == "conv2d_geometry_k4_pads_1_1_2_2") {
            g = {4, 4, 1, 1, 1, 1, 2, 2, 1, 1};
        } else if (row == "conv2d_geometry_k3x2_s1x2_pads_1_2_3_0") {
            g = {3, 2, 1, 2, 1, 2, 3, 0, 1, 1};
        } else if (row == "conv2d_geometry_g2_k3_d2x1_p2_1") {
            g = {3, 3, 1, 1, 2, 1, 2, 1, 2, 1};
            cin = 4, cout = 6, groups = 2;
        } else if (row == "conv2d_geometry_depthwise_k3_s2_d2_p2") {
            g = {3, 3, 2, 2, 2, 2, 2, 2, 2, 2};
            cin = cout = groups = 3;
        }
        s.layer = std::make_unique<Conv2d>("conv", cin, cout, g, groups, true);
        s.x = randomTensor({2, cin, 7, 8}, rng);
    } else if (row == "batchnorm2d_train" || row == "batchnorm2d_frozen") {
        auto bn = std::make_unique<BatchNorm2d>("bn", 3);
        if (row == "batchnorm2d_frozen") {
            bn->setFrozen(true);
            bn->runningMean() = randomTensor({3}, rng, -0.5f, 0.5f);
            bn->runningVar() = randomTensor({3}, rng, 0.5f, 2.0f);
        }
        s.layer = std::move(bn);
        s.x = randomTensor({4, 3, 3, 3}, rng, -1.0f, 2.0f);
    } else if (row == "relu") {
        s.layer = std::make_unique<ReLU>("relu");
        s.x = awayFromZeroTensor({2, 3, 4, 4}, rng);
    } else if (row == "relu6") {
        s.layer = std::make_unique<ReLU6>("relu6");
        s.x = awayFromRelu6KinksTensor({2, 3, 4, 4}, rng);
    } else if (row.startsWith("prelu_")) { // prelu_shared, prelu_channels (N, C, H, W), prelu_flat_channels (N, C)
        const bool flat = row == "prelu_flat_channels";
        const std::size_t C = row == "prelu_shared" ? 1 : 3;
        auto p = std::make_unique<PReLU>("prelu", C);
        for (float& a : p->weight().value.values()) a = rng.uniform(-0.5f, 1.0f);
        s.layer = std::move(p);
        s.x = awayFromZeroTensor(flat ? Shape{4, 3} : Shape{2, 3, 4, 4}, rng); // a step of kGradEps never crosses 0
    } else if (row.startsWith("groupnorm_")) { // groupnorm_g2 (4 channels), _instance (G = C = 3), _one_noaffine, _features (N, C)
        const std::size_t C = row == "groupnorm_instance" ? 3 : 4;
        const std::size_t G = row == "groupnorm_g2" || row == "groupnorm_features" ? 2 : row == "groupnorm_instance" ? 3 : 1;
        auto g = std::make_unique<GroupNorm>("gn", G, C, 1e-5f, row != "groupnorm_one_noaffine");
        if (g->affine()) {
            for (float& v : g->weight().value.values()) v = rng.uniform(0.5f, 1.5f);
            for (float& v : g->bias().value.values()) v = rng.uniform(-0.5f, 0.5f);
        }
        s.layer = std::move(g);
        s.x = randomTensor(row == "groupnorm_features" ? Shape{3, 4} : Shape{2, C, 3, 4}, rng, -1.0f, 2.0f);
    } else if (row == "channel_max") {
        s.layer = std::make_unique<ChannelMax>("cmax");
        s.x = randomTensor({2, 4, 3, 5}, rng, -1.0f, 2.0f); // distinct values: a step of kGradEps keeps each maximum
    } else if (row.startsWith("layernorm2d_")) { // layernorm2d_maps (5 channels), _noaffine, _features (N, C)
        const std::size_t C = 5;
        auto l = std::make_unique<LayerNorm2d>("ln", C, 1e-5f, row != "layernorm2d_noaffine");
        if (l->affine()) {
            for (float& v : l->weight().value.values()) v = rng.uniform(0.5f, 1.5f);
            for (float& v : l->bias().value.values()) v = rng.uniform(-0.5f, 0.5f);
        }
        s.layer = std::move(l);
        s.x = randomTensor(row == "layernorm2d_features" ? Shape{3, C} : Shape{2, C, 3, 4}, rng, -1.0f, 2.0f);
    } else if (row.startsWith("pointwise_")) { // pointwise_<kind>[_alpha[_beta]]
        const QStringList parts = row.split('_');
        const auto param = [&](qsizetype i) { return parts.size() > i ? std::optional<float>(parts[i].toFloat()) : std::nullopt; };
        for (const PointwiseInfo& r : pointwiseTable())
            if (parts[1] == r.name) s.layer = std::make_unique<Pointwise>("act", r.kind, param(2), param(3));
        s.x = awayFromPointwiseBendsTensor({2, 3, 4, 4}, rng);
    } else if (row == "avgpool2d_k2") {
        s.layer = std::make_unique<AvgPool2d>("pool", 2);
        s.x = randomTensor({2, 2, 6, 5}, rng); // the odd last column is dropped (floor)
    } else if (row == "avgpool2d_k3_s2_overlapping") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3, 2);
        s.x = randomTensor({1, 2, 7, 7}, rng);
    } else if (row == "avgpool2d_k3_s3_tiled") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3);
        s.x = randomTensor({2, 2, 8, 7}, rng); // the last two rows and the last column are in no window
    } else if (row == "avgpool2d_k3_s2_p1") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3, 2, 1); // zero padding counted in the mean
        s.x = randomTensor({2, 2, 7, 6}, rng);
    } else if (row == "avgpool2d_k3_s1_p1") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3, 1, 1);
        s.x = randomTensor({1, 2, 5, 5}, rng);
    } else if (row == "global_avgpool2d") {
        s.layer = std::make_unique<GlobalAvgPool2d>("pool");
        s.x = randomTensor({2, 3, 5, 4}, rng);
    } else if (row == "add") {
        s.layer = std::make_unique<Add>("add");
        s.x = randomTensor({2, 3, 3, 4}, rng);
        s.x2 = randomTensor({2, 3, 3, 4}, rng);
    } else if (row == "add_gate_second") { // x + t, t = [N, C, 1, 1] (GCNet's context add)
        s.layer = std::make_unique<Add>("add");
        s.x = randomTensor({2, 3, 3, 4}, rng);
        s.x2 = randomTensor({2, 3, 1, 1}, rng);
    } else if (row == "add_gate_first") { // t + x
        s.layer = std::make_unique<Add>("add");
        s.x = randomTensor({2, 4, 1, 1}, rng);
        s.x2 = randomTensor({2, 4, 2, 5}, rng);
    } else if (row == "mul_equal") {
        s.layer = std::make_unique<Mul>("mul");
        s.x = randomTensor({2, 3, 3, 4}, rng);
        s.x2 = randomTensor({2, 3, 3, 4}, rng);
    } else if (row == "mul_gate_second") { // x * s, s = [N, C, 1, 1] (squeeze-and-excitation)
        s.layer = std::make_unique<Mul>("mul");
        s.x = randomTensor({2, 3, 3, 4}, rng);
        s.x2 = randomTensor({2, 3, 1, 1}, rng);
    } else if (row == "mul_gate_first") { // s * x
        s.layer = std::make_unique<Mul>("mul");
        s.x = randomTensor({2, 4, 1, 1}, rng);
        s.x2 = randomTensor({2, 4, 2, 5}, rng);
    } else if (row == "mul_flat") {
        s.layer = std::make_unique<Mul>("mul");
        s.x = randomTensor({3, 5}, rng);
        s.x2 = randomTensor({3, 5}, rng);
    } else if (row == "concat2") {
        s.layer = std::make_unique<Concat>("cat", 2);
        s.x = randomTensor({2, 3, 3, 4}, rng);
        s.x2 = randomTensor({2, 2, 3, 4}, rng);
    } else if (row == "concat3") {
        s.layer = std::make_unique<Concat>("cat", 3);
        s.x = randomTensor({2, 1, 2, 3}, rng);
        s.x2 = randomTensor({2, 4, 2, 3}, rng);
        s.x3 = randomTensor({2, 2, 2, 3}, rng);
    } else if (row == "concat2_flat") {
        s.layer = std::make_unique<Concat>("cat", 2);
        s.x = randomTensor({3, 4}, rng);
        s.x2 = randomTensor({3, 2}, rng);
    } else if (row == "channel_shuffle_g2") {
        s.layer = std::make_unique<ChannelShuffle>("shuffle", 2);
        s.x = randomTensor({2, 6, 3, 4}, rng);
    } else if (row == "channel_shuffle_g3_flat") {
        s.layer = std::make_unique<ChannelShuffle>("shuffle", 3);
        s.x = randomTensor({3, 6}, rng);
    } else if (row.startsWith("pad_")) { // reflect, replicate, zeros; asymmetric pads
        const PadMode mode = row == "pad_reflect" ? PadMode::Reflect : row == "pad_replicate" ? PadMode::Replicate : PadMode::Zeros;
        s.layer = std::make_unique<Pad2d>("pad", mode, std::array<std::size_t, 4>{1, 2, 2, 1});
        s.x = randomTensor({2, 2, 4, 5}, rng);
    } else if (row == "slice_channels_1_4") {
        s.layer = std::make_unique<Slice>("slice", 1, 4);
        s.x = randomTensor({2, 5, 3, 3}, rng);
    } else if (row == "slice_features_0_2") {
        s.layer = std::make_unique<Slice>("slice", 0, 2);
        s.x = randomTensor({3, 5}, rng);
    } else if (row == "maxpool2d_k2") {
        s.layer = std::make_unique<MaxPool2d>("pool", 2);
        s.x = distinctTensor({2, 2, 6, 6}, rng);
    } else if (row == "maxpool2d_k3_s2_overlapping") {
        s.layer = std::make_unique<MaxPool2d>("pool", 3, 2);
        s.x = distinctTensor({1, 2, 7, 7}, rng);
    } else if (row == "maxpool2d_k3_s2_p1") { // a ResNet stem: -inf padding
        s.layer = std::make_unique<MaxPool2d>("pool", 3, 2, 1);
        s.x = distinctTensor({2, 2, 7, 6}, rng);
    } else if (row == "maxpool2d_k2_s2_p1") {
        s.layer = std::make_unique<MaxPool2d>("pool", 2, 2, 1);
        s.x = distinctTensor({1, 2, 5, 5}, rng);
    } else if (row.startsWith("maxpool2d_geometry_")) { // windows that are not square: the general path
        PoolGeometry g;
        if (row == "maxpool2d_geometry_k2_ceil_odd") { // nn.MaxPool2d(2, ceil_mode=True) on 7 x 9
            g = PoolGeometry::square(2, 2, 0);
            g.ceilMode = true;
            s.x = distinctTensor({2, 2, 7, 9}, rng);
        } else if (row == "maxpool2d_geometry_k3_s2_p1_ceil") { // nn.MaxPool2d(3, 2, 1, ceil_mode=True)
            g = PoolGeometry::square(3, 2, 1);
            g.ceilMode = true;
            s.x = distinctTensor({1, 2, 8, 6}, rng);
        } else if (row == "maxpool2d_geometry_k2x1") {
            g.kh = 2, g.kw = 1, g.sh = 2, g.sw = 1;
            s.x = distinctTensor({2, 2, 6, 5}, rng);
        } else if (row == "maxpool2d_geometry_k3x2_s2x1_p1_0_ceil") { // overlapping rows
            g.kh = 3, g.kw = 2, g.sh = 2, g.sw = 1, g.padTop = g.padBottom = 1, g.ceilMode = true;
            s.x = distinctTensor({1, 3, 7, 6}, rng);
        } else if (row == "maxpool2d_geometry_k2x3_s1x2_pads_0_1_1_0") {
            g.kh = 2, g.kw = 3, g.sh = 1, g.sw = 2, g.padLeft = 1, g.padBottom = 1;
            s.x = distinctTensor({1, 2, 6, 7}, rng);
        } else if (row == "maxpool2d_geometry_global_5x7") {
            g.kh = g.sh = 5, g.kw = g.sw = 7;
            s.x = distinctTensor({2, 3, 5, 7}, rng);
        }
        s.layer = std::make_unique<MaxPool2d>("pool", g);
    } else if (row.startsWith("avgpool2d_geometry_")) { // windows that are not square: the general path
        PoolGeometry g;
        if (row == "avgpool2d_geometry_k2_ceil_odd") { // nn.AvgPool2d(2, ceil_mode=True) on 7 x 9
            g = PoolGeometry::square(2, 2, 0);
            g.ceilMode = true;
            s.x = randomTensor({2, 2, 7, 9}, rng);
        } else if (row == "avgpool2d_geometry_k3_s2_p1_ceil") { // windows past input + padding
            g = PoolGeometry::square(3, 2, 1);
            g.ceilMode = true;
            s.x = randomTensor({1, 2, 8, 6}, rng);
        } else if (row == "avgpool2d_geometry_k3_s2_p1_ceil_exclude") { // count_include_pad=False
            g = PoolGeometry::square(3, 2, 1);
            g.ceilMode = true;
            g.countIncludePad = false;
            s.x = randomTensor({1, 2, 8, 6}, rng);
        } else if (row == "avgpool2d_geometry_k3x2_s2x1_p1_0_exclude") {
            g.kh = 3, g.kw = 2, g.sh = 2, g.sw = 1, g.padTop = g.padBottom = 1, g.countIncludePad = false;
            s.x = randomTensor({2, 2, 7, 6}, rng);
        } else if (row == "avgpool2d_geometry_k2x3_s1x2_pads_0_1_1_0") {
            g.kh = 2, g.kw = 3, g.sh = 1, g.sw = 2, g.padLeft = 1, g.padBottom = 1;
            s.x = randomTensor({1, 2, 6, 7}, rng);
        }
        s.layer = std::make_unique<AvgPool2d>("pool", g);
    } else if (row == "dropout_p0.5") {
        s.layer = std::make_unique<Dropout>("dropout", 0.5f);
        s.x = randomTensor({2, 3, 4, 4}, rng);
    } else if (row == "flatten") {
        s.layer = std::make_unique<Flatten>("flatten");
        s.x = randomTensor({2, 3, 2, 2}, rng);
    } else if (row == "linear") {
        s.layer = std::make_unique<Linear>("fc", 5, 4);
        s.x = randomTensor({3, 5}, rng);
    } else if (row == "linear_nobias") { // nn.Linear(5, 4, bias=False): y = x W^T, the weight its only parameter
        s.layer = std::make_unique<Linear>("fc", 5, 4, false);
        s.x = randomTensor({3, 5}, rng);
    } else if (row == "log_softmax") {
        s.layer = std::make_unique<LogSoftmax>("log_softmax");
        s.x = randomTensor({3, 6}, rng, -3.0f, 3.0f);
    } else if (row == "softmax") {
        s.layer = std::make_unique<Softmax>("softmax");
        s.x = randomTensor({3, 6}, rng, -3.0f, 3.0f);
    }
    // Parameters away from their defaults (BatchNorm gamma = 1, beta = 0; conv/linear = 0).
    if (s.layer)
        for (Param* p : s.layer->params())
            p->value = p->name == "gamma" ? randomTensor(p->value.shape(), rng, 0.5f, 1.5f)
                                          : randomTensor(p->value.shape(), rng, -0.5f, 0.5f);
    return s;
}

} // namespace

class TestLayersGradients : public QObject {
    Q_OBJECT

private slots:
    // numerical gradients
    void layerGradient_data();
    void layerGradient();
    void modelGradient_data();
    void modelGradient();
    void lossGradient_data();
    void lossGradient();
};

void TestLayersGradients::layerGradient_data()
{
    QTest::addColumn<QString>("layer");
    for (const char* row :
         {"conv2d_k3_s1_p0", "conv2d_k3_s2_p1", "conv2d_k5_s1_p2", "conv2d_direct_k3_s1_p1_bias",
          "conv2d_direct_k5_s1_p2", "conv2d_direct_k3_s2_p1", "conv2d_g2_k3_s1_p1_bias",
          "conv2d_g2_k3_s2_p0_nobias", "conv2d_g3_k1_channel_multiplier", "depthwise_k3_s1_p1", "depthwise_k3_s2_p1",
          "depthwise_k3_s2_p1_bias", "conv2d_geometry_k1x7_p0_3", "conv2d_geometry_k7x1_p3_0_c8",
          "conv2d_geometry_k3_s2x1_p1", "conv2d_geometry_k3_d2_p2", "conv2d_geometry_k4_pads_1_1_2_2",
          "conv2d_geometry_k3x2_s1x2_pads_1_2_3_0", "conv2d_geometry_g2_k3_d2x1_p2_1",
          "conv2d_geometry_depthwise_k3_s2_d2_p2", "batchnorm2d_train", "batchnorm2d_frozen", "relu", "relu6", "maxpool2d_k2",
          "maxpool2d_k3_s2_overlapping", "maxpool2d_k3_s2_p1", "maxpool2d_k2_s2_p1", "maxpool2d_geometry_k2_ceil_odd",
          "maxpool2d_geometry_k3_s2_p1_ceil", "maxpool2d_geometry_k2x1", "maxpool2d_geometry_k3x2_s2x1_p1_0_ceil",
          "maxpool2d_geometry_k2x3_s1x2_pads_0_1_1_0", "maxpool2d_geometry_global_5x7", "avgpool2d_geometry_k2_ceil_odd",
          "avgpool2d_geometry_k3_s2_p1_ceil", "avgpool2d_geometry_k3_s2_p1_ceil_exclude", "avgpool2d_geometry_k3x2_s2x1_p1_0_exclude",
          "avgpool2d_geometry_k2x3_s1x2_pads_0_1_1_0", "avgpool2d_k2",
          "avgpool2d_k3_s2_overlapping", "avgpool2d_k3_s3_tiled", "avgpool2d_k3_s2_p1", "avgpool2d_k3_s1_p1",
          "global_avgpool2d", "add", "add_gate_second", "add_gate_first", "mul_equal", "mul_gate_second", "mul_gate_first", "mul_flat", "concat2", "concat3",
          "concat2_flat", "channel_shuffle_g2", "channel_shuffle_g3_flat", "slice_channels_1_4", "slice_features_0_2", "pad_reflect", "pad_replicate", "pad_zeros", "dropout_p0.5", "flatten", "linear", "linear_nobias", "log_softmax", "softmax",
          "pointwise_Sigmoid", "pointwise_Tanh", "pointwise_SiLU", "pointwise_Hardsigmoid", "pointwise_Hardswish",
          "pointwise_LeakyReLU", "pointwise_LeakyReLU_0.2", "pointwise_ELU", "pointwise_ELU_0.7", "pointwise_GELU",
          "pointwise_GELUTanh", "pointwise_Hardtanh", "pointwise_Hardtanh_-2_1.5", "pointwise_Softplus", "pointwise_Mish", "pointwise_SELU", "pointwise_CELU", "pointwise_CELU_0.5", "pointwise_Softsign", "prelu_shared", "prelu_channels", "prelu_flat_channels",
          "groupnorm_g2", "groupnorm_instance", "groupnorm_one_noaffine", "groupnorm_features", "layernorm2d_maps",
          "layernorm2d_noaffine", "layernorm2d_features", "channel_max"})
        QTest::newRow(row) << QString(row);
}

// L = sum(r * layer(x)) for a fixed random r: dL/dy = r, so backward(dy = r) must give dL/dx
// and dL/dparam, which we compare with central differences of L.
void TestLayersGradients::layerGradient()
{
    QFETCH(QString, layer);
    Rng rng(stableHash(qPrintable(layer)));
    GradSetup s = makeGradSetup(layer, rng);
    QVERIFY2(s.layer, qPrintable("no set-up for " + layer));
    Layer& l = *s.layer;
    RunContext ctx;
    ctx.training = true;
    ctx.rngKey = 0xC0FFEE; // fixed: dropout draws the same mask on every forward

    // Through the multi-input forms, which forward to the plain ones for single-input layers.
    std::vector<Tensor> xs = {s.x};
    if (!s.x2.empty()) xs.push_back(s.x2);
    if (!s.x3.empty()) xs.push_back(s.x3);
    QCOMPARE(xs.size(), l.numInputs());
    std::vector<const Tensor*> in;
    std::vector<Shape> inShapes;
    for (const Tensor& t : xs) {
        in.push_back(&t);
        inShapes.push_back(t.shape());
    }
    Tensor y;
    l.forwardMulti(in, y, ctx);
    QCOMPARE(y.shape(), l.outputShapeMulti(inShapes));
    const Tensor r = randomTensor(y.shape(), rng);
    std::vector<Tensor> dxs(xs.size());
    std::vector<Tensor*> dxPtrs;
    for (Tensor& t : dxs) dxPtrs.push_back(&t);
    l.backwardMulti(in, y, r, dxPtrs);
    std::vector<Tensor> paramGrads;
    for (Param* p : l.params()) paramGrads.push_back(p->grad);
    if (layer.endsWith("_nobias")) QCOMPARE(l.params().size(), std::size_t{1}); // no bias to train

    Tensor yy;
    const auto loss = [&] {
        l.forwardMulti(in, yy, ctx);
        return dot(r, yy);
    };
    std::string err;
    for (std::size_t j = 0; j < xs.size(); ++j) {
        QCOMPARE(dxs[j].shape(), xs[j].shape());
        err = numericCheck("dL/dx" + std::to_string(j), xs[j].data(), dxs[j].data(), xs[j].numel(), kGradEps,
                           kGradAtol, kGradRtol, loss);
        QVERIFY2(err.empty(), err.c_str());
    }

    const std::vector<Param*> params = l.params();
    for (std::size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        QCOMPARE(paramGrads[k].shape(), p.value.shape());
        err = numericCheck("dL/d" + p.name, p.value.data(), paramGrads[k].data(), p.value.numel(), kGradEps,
                           kGradAtol, kGradRtol, loss);
        QVERIFY2(err.empty(), err.c_str());
    }
}

void TestLayersGradients::modelGradient_data()
{
    QTest::addColumn<QString>("graph");
    QTest::newRow("residual_block") << "residual_block";
    QTest::newRow("one_activation_read_three_times") << "one_activation_read_three_times";
    QTest::newRow("se_gate_and_concat") << "se_gate_and_concat";
    QTest::newRow("context_add_fused_passes") << "context_add_fused_passes";
}

// A whole graph model: L = sum(r * model(x)), model.backward(r), every parameter against central
// differences. The stem's output is read by more than one layer, so the stem's gradients are
// right only if the model sums the gradients flowing back along every read.
void TestLayersGradients::modelGradient()
{
    QFETCH(QString, graph);
    Rng rng(stableHash(qPrintable(graph)));
    Model m(graph.toStdString(), {2, 4, 4});
    const std::size_t stem = m.add(std::make_unique<Conv2d>("stem", 2, 3, 3, 1, 1));
    std::size_t reluInput = 0; // activation index of the ReLU's input, 0 = no ReLU
    if (graph == "residual_block") {
        // stem -> conv -> relu -> conv, + identity shortcut from the stem, Add, flatten, linear
        reluInput = m.add(std::make_unique<Conv2d>("conv1", 3, 3, 3, 1, 1));
        m.add(std::make_unique<ReLU>("relu"));
        const std::size_t branch = m.add(std::make_unique<Conv2d>("conv2", 3, 3, 3, 1, 1, 1, false));
        m.add(std::make_unique<Add>("add"), {branch, stem});
    } else if (graph == "se_gate_and_concat") {
        // stem -> pool -> 1x1 conv -> sigmoid = gate; stem * gate; cat(gated, stem, stem * stem) along the channels
        m.add(std::make_unique<GlobalAvgPool2d>("pool"));
        m.add(std::make_unique<Conv2d>("fc1", 3, 3, 1, 1, 0, 1, true));
        const std::size_t gate = m.add(std::make_unique<Pointwise>("gate", LayerKind::Sigmoid));
        const std::size_t gated = m.add(std::make_unique<Mul>("excite"), {stem, gate});
        const std::size_t square = m.add(std::make_unique<Mul>("square"), {stem, stem});
        m.add(std::make_unique<Concat>("cat", 3), {gated, stem, square});
    } else if (graph == "context_add_fused_passes") {
        // GCNet's context add, with the trainer's fused passes on: t = 1x1 conv(pool(stem));
        // relu(stem + t), then t + that (the gate first): the gate's gradient sums over the planes
        m.setFusion(true);
        m.add(std::make_unique<GlobalAvgPool2d>("pool"));
        const std::size_t t = m.add(std::make_unique<Conv2d>("transform", 3, 3, 1, 1, 0, 1, true));
        reluInput = m.add(std::make_unique<Add>("context_add"), {stem, t});
        const std::size_t r = m.add(std::make_unique<ReLU>("relu")); // not fused into a broadcast sum
        m.add(std::make_unique<Add>("context_add2"), {t, r});
    } else {
        // stem + stem, then + stem again: three reads of one activation, two by the same layer
        const std::size_t twice = m.add(std::make_unique<Add>("add1"), {stem, stem});
        m.add(std::make_unique<Add>("add2"), {stem, twice});
    }
    const std::size_t channels = graph == "se_gate_and_concat" ? 9 : 3;
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc", channels * 4 * 4, 4));
    const std::size_t stemReaders = graph == "residual_block" || graph == "context_add_fused_passes" ? 2 : graph == "se_gate_and_concat" ? 5 : 3;
    QCOMPARE(m.consumersOf(stem).size(), stemReaders);

    RunContext ctx;
    ctx.training = true;
    // Redraw input and parameters until every ReLU input keeps its margin from 0 (a few draws).
    Tensor x;
    const auto reluClear = [&] {
        if (!reluInput) return true;
        const std::vector<float>& v = m.activation(reluInput).values();
        return std::all_of(v.begin(), v.end(), [](float a) { return std::abs(a) >= kModelReluMargin; });
    };
    int draws = 0;
    do {
        x = randomTensor({2, 2, 4, 4}, rng);
        m.initParams(rng.next());
        m.forward(x, ctx);
    } while (!reluClear() && ++draws < 1000);
    QVERIFY2(reluClear(), "no draw kept the ReLU inputs clear of 0");

    const Tensor y = m.forward(x, ctx);
    QCOMPARE(y.shape(), m.outputShape(2));
    const Tensor r = randomTensor(y.shape(), rng);
    m.backward(r);
    const std::vector<Param*> params = m.params();
    std::vector<Tensor> analytic;
    for (Param* p : params) analytic.push_back(p->grad);

    const auto loss = [&] { return dot(r, m.forward(x, ctx)); };
    for (std::size_t k = 0; k < params.size(); ++k) {
        const std::string err = numericCheck("dL/d" + std::to_string(k) + "." + params[k]->name,
                                             params[k]->value.data(), analytic[k].data(), analytic[k].numel(),
                                             kModelGradEps, kGradAtol, kGradRtol, loss);
        QVERIFY2(err.empty(), err.c_str());
    }
}

void TestLayersGradients::lossGradient_data()
{
    QTest::addColumn<QString>("loss");
    QTest::newRow("nll") << "nll";
    QTest::newRow("cross_entropy") << "cross_entropy";
    QTest::newRow("nll_of_probabilities") << "nll_of_probabilities";
    QTest::newRow("mse") << "mse";
}

void TestLayersGradients::lossGradient()
{
    QFETCH(QString, loss);
    Rng rng(stableHash(qPrintable(loss)));
    const std::vector<std::int32_t> targets = {3, 0, 4, 4, 1};
    Tensor x, grad, scratch;
    std::function<float(Tensor&)> f;
    if (loss == "nll") {
        // log-probabilities of 5 samples over 5 classes (NLL does not need them normalised)
        Tensor lp = randomTensor({5, 5}, rng, -4.0f, 0.0f);
        x = lp;
        f = [&](Tensor& g) { return nllLoss(x, targets, g); };
    } else if (loss == "cross_entropy") {
        x = randomTensor({5, 5}, rng, -3.0f, 3.0f);
        f = [&](Tensor& g) { return crossEntropyLoss(x, targets, g); };
    } else if (loss == "nll_of_probabilities") { // probabilities (a Softmax's output), not normalised here
        x = randomTensor({5, 5}, rng, 0.2f, 1.0f); // away from 0, where the difference quotient of log bends
        f = [&](Tensor& g) { return nllOfProbabilitiesLoss(x, targets, g); };
    } else {
        x = randomTensor({4, 6}, rng);
        const Tensor target = randomTensor({4, 6}, rng);
        f = [&, target](Tensor& g) { return mseLoss(x, target, g); };
    }
    f(grad);
    QCOMPARE(grad.shape(), x.shape());
    const Tensor analytic = grad;
    const std::string err = numericCheck("dL/dinput", x.data(), analytic.data(), x.numel(), kLossEps, kLossGradAtol,
                                         kLossGradRtol, [&] { return static_cast<double>(f(scratch)); });
    QVERIFY2(err.empty(), err.c_str());
}

QTEST_GUILESS_MAIN(TestLayersGradients)
#include "tst_layers_gradients.moc"
