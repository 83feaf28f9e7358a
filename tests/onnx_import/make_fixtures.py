#!/usr/bin/python3
"""Writes the ONNX import fixtures: small PyTorch modules exported with torch.onnx.export
(Debian's python3-torch 1.13; run with /usr/bin/python3), and PyTorch's own outputs for them.

For each case NAME it writes, next to this script:
  NAME.onnx   the export (input 'input' [N, C, H, W], output 'logits')
  NAME.json   {"opset", "input_shape": [N, C, H, W], "input": [...], "output": [...],
               "output_shape": [...], "head": "logits" | "log_softmax" | "softmax",
               and for a graph of dynamic height and width "input2_shape", "input2", "output2":
               PyTorch's output at a second image size}
              input: fixed seeded images (already normalised); output: the module's eval-mode
              output on them, flat, row-major.
tst_onnx_import and tst_onnx_import_input compare QuantScope's forward with "output" within 1e-4.

Usage: /usr/bin/python3 tests/onnx_import/make_fixtures.py [OUT_DIR [NAME...]]
(with NAMEs, only those cases are written; each case's seed depends only on its place in CASES)
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from fixture_modules_conv import ConvGeometry  # next to this script
from fixture_modules_channels import ShuffleTiny  # next to this script
from fixture_modules_input import BgrNormalise, BytesInput, GrayCopiesNormalise, InvertInput  # next to this script
from fixture_modules_pool import AvgCeilPadded, AvgPoolGeometry, MaxOverMap, MaxPoolGeometry  # next to this script
from fixture_modules_norms import ConvNeXtTV, ConvNeXtCF, LayerNormNoAffine, LayerNormRsqrt, LayerNormVar, KerasMatMulHead  # next to this script
from fixture_modules_attention import CBAMNet  # next to this script
from fixture_modules_joins import ActNet, SigmoidTimesX, GeluHalfFirst, PReluNet, GeluTanhByHand, Clamp, HardByHand, SEConv, SELinearView, SELinearFlat, GateMul, DenseBlock, Inception, act_net  # next to this script

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


class SeqView(nn.Module):
    """Sequential CNN flattening with x.view(x.size(0), -1): Shape/Gather/Unsqueeze/Concat."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 5 * 5, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = x.view(x.size(0), -1)
        return self.fc(x)


class FlattenBN(nn.Module):
    """Conv-ReLU-BN (not foldable into the conv, so a BatchNormalization node), AvgPool2d, nn.Flatten, Dropout, Linear, LogSoftmax."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(6),
                                      nn.AvgPool2d(2))
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.3)
        self.classifier = nn.Linear(6 * 5 * 5, 7)

    def forward(self, x):
        return F.log_softmax(self.classifier(self.drop(self.flatten(self.features(x)))), dim=1)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class Residual(nn.Module):
    """Residual blocks (identity and 1x1 shortcut), AdaptiveAvgPool2d(1), Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.layer1 = Block(4, 4, 1)
        self.layer2 = Block(4, 8, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class MobileBlock(nn.Module):
    """Depthwise-separable block with ReLU6 and an x.mean((2, 3)) head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 12, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.act(self.bn2(self.pw(self.act(self.bn1(self.dw(x))))))
        return self.fc(x.mean((2, 3)))


class PadConv(nn.Module):
    """F.pad and nn.ZeroPad2d in front of convolutions, mean with keepdim, a Softmax head."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d(1)
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.clamp(self.conv1(self.pad(x)), min=0.0)
        x = F.relu(self.conv2(F.pad(x, (2, 2, 2, 2))))
        x = x.mean((2, 3), keepdim=True)
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class MatMulHead(nn.Module):
    """A Linear written as x @ W + b (MatMul then Add) on a 2-D input; bias-free conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 5, stride=2, bias=False)
        self.w = nn.Parameter(torch.randn(3 * 4 * 4, 6) * 0.1)
        self.b = nn.Parameter(torch.randn(6) * 0.1)

    def forward(self, x):
        x = torch.flatten(F.relu(self.conv(x)), 1)
        return x @ self.w + self.b


class PoolPad(nn.Module):
    """MaxPool2d(3, 2, 1) (a ResNet stem) and AvgPool2d(3, 1, 1): pooling with padding."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.avgpool = nn.AvgPool2d(3, 1, 1)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = self.avgpool(self.maxpool(F.relu(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


class SqueezeHead(nn.Module):
    """Global pooling then x.squeeze(-1).squeeze(-1) (two Squeeze nodes) into the Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.pool(F.relu(self.conv(x))).squeeze(-1).squeeze(-1))


class SqueezeAllHead(SqueezeHead):
    """The same with x.squeeze() (one Squeeze of every axis of size 1; the batch is not 1)."""

    def forward(self, x):
        return self.fc(self.pool(F.relu(self.conv(x))).squeeze())


class FlatMLP(nn.Module):
    """An MLP on flat images [N, 64] (an 8 x 8 image flattened by the caller), normalising its
    input inside the graph ((x - 0.5) / 0.25) and ending in a bias-free Linear."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 24)
        self.fc2 = nn.Linear(24, 5, bias=False)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1((x - 0.5) / 0.25)))


class FlatMLPNoBias(nn.Module):
    """An MLP on flat images [N, 64] whose first Linear is bias-free: exported without constant
    folding, its MatMul reads the weight through a Transpose (tester 21: with the input's shape
    stripped, the features come from that weight)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 24, bias=False)
        self.fc2 = nn.Linear(24, 5)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class ActFirst(nn.Module):
    """An activation on the pixels before the first Conv (F.elu, F.hardswish on channels-last
    images permuted first): a reader's weight is found through it."""

    def __init__(self, act, channels_last=False):
        super().__init__()
        self.act = act
        self.channels_last = channels_last
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        x = F.relu(self.conv(self.act(x)))
        return self.fc(x.flatten(1))


class FlatMLPBN(nn.Module):
    """An MLP on flat images with BatchNorm1d after each hidden Linear (the second one bias-free),
    folded into the Linears at import."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 24)
        self.bn1 = nn.BatchNorm1d(24)
        self.fc2 = nn.Linear(24, 16, bias=False)
        self.bn2 = nn.BatchNorm1d(16, eps=1e-3)
        self.fc3 = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc3(F.relu(self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x)))))))


class ImageMLP(nn.Module):
    """An MLP on 8 x 8 images that flattens them first and normalises the flat values
    ((x - 0.3) / 0.35, one value each), ending in a Softmax (probabilities)."""

    def __init__(self, view=False):
        super().__init__()
        self.view = view
        self.fc1 = nn.Linear(64, 24)
        self.fc2 = nn.Linear(24, 5)

    def forward(self, x):
        x = x.view(-1, 64) if self.view else x.flatten(1)
        return torch.softmax(self.fc2(F.relu(self.fc1((x - 0.3) / 0.35))), dim=-1)


class ImageMLPView(ImageMLP):
    """The same with x.view(-1, 64) (a Reshape) and F.softmax over dim 1."""

    def __init__(self):
        super().__init__(view=True)


class ClampChain(nn.Module):
    """ReLU6 written as two clamps: x.clamp(min=0).clamp(max=6) (Clip(0) then Clip(max=6)) and
    F.relu(x).clamp(max=6) (Relu then Clip), then x.clamp(min=0) after a Relu (a no-op)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 10)
        for conv in (self.conv1, self.conv2):  # large enough outputs that the bound 6 is reached
            conv.weight.data *= 8

    def forward(self, x):
        x = self.conv1(x).clamp(min=0).clamp(max=6)
        x = F.relu(self.conv2(x)).clamp(max=6).clamp(min=0)
        return self.fc(x.mean((2, 3)))


class Pixels255(nn.Module):
    """A model that takes 0..255 pixels: ToTensor's x / 255 and then (x - 0.1307) / 0.3081 written
    into the graph (Div, Sub, Div), or x * (1 / 255) (Mul), before a conv."""

    def __init__(self, mul=False):
        super().__init__()
        self.mul = mul
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = x * (1.0 / 255.0) if self.mul else x / 255.0
        x = (x - 0.1307) / 0.3081
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class Pixels255Mul(Pixels255):
    def __init__(self):
        super().__init__(mul=True)


class GrayInput(nn.Module):
    """Grayscale images without their channel axis, [N, 8, 8]: x.unsqueeze(1) before the convs
    ("unsqueeze"), or x.view(x.size(0), -1) before an MLP ("flat")."""

    def __init__(self, mode="unsqueeze"):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(64, 16)
        self.fc = nn.Linear(4 * 4 * 4 if mode == "unsqueeze" else 16, 10)

    def forward(self, x):
        if self.mode == "flat":
            return self.fc(F.relu(self.fc1(x.view(x.size(0), -1))))
        x = F.max_pool2d(F.relu(self.conv(x.unsqueeze(1))), 2)
        return self.fc(torch.flatten(x, 1))


class ChannelsLast(nn.Module):
    """Channels-last colour images [N, H, W, 3] (a pipeline that keeps HWC arrays), made
    [N, C, H, W] by the first op: x.permute(0, 3, 1, 2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x.permute(0, 3, 1, 2))), 2)
        return self.fc(torch.flatten(x, 1))


class KerasFlatten(nn.Module):
    """A model ported from Keras/TensorFlow: its maps permuted to channels-last before the flatten
    (x.permute(0, 2, 3, 1)), so that the Linear's weight reads them in Keras' order. Three
    channels of a non-square map, so that a wrong axis shows. "reshape": .reshape(N, -1) and a
    ReLU between the flatten and the Linear; "silu": a SiLU there; "roundtrip": permuted there and back (perm
    [0, 3, 1, 2]) around an activation first; "softmax": a softmax over the channels-last axis
    (refused)."""

    def __init__(self, style="flatten"):
        super().__init__()
        self.style = style
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 3, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)  # [N, 5, 4, 3]
        if self.style == "roundtrip":
            x = torch.sigmoid(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x.permute(0, 2, 3, 1)
        if self.style == "softmax":
            x = torch.softmax(x, dim=-1)
        if self.style == "reshape":
            return self.fc(F.relu(x.reshape(x.size(0), -1)))
        if self.style == "silu":  # an activation read as a subgraph (x * sigmoid(x)) between them
            return self.fc(F.silu(torch.flatten(x, 1)))
        return self.fc(torch.flatten(x, 1))


class GroupNormNet(nn.Module):
    """nn.GroupNorm and nn.InstanceNorm2d, as torch.onnx.export writes them (x.view(N, G, -1),
    InstanceNormalization with ones and zeros, a Reshape back, the weight and bias as Mul and Add;
    InstanceNormalization with the weight and bias itself): GroupNorm(2, 6) after a conv,
    InstanceNorm2d(6, affine=True) after the next, InstanceNorm2d(6) without affine parameters
    ("one": GroupNorm(1, 6) first, each image normalised over all of its maps; torch 1.13 cannot
    export GroupNorm on [N, C] features). The affine parameters
    are drawn away from 1 and 0, so that a lost or misplaced one shows."""

    def __init__(self, style="maps"):
        super().__init__()
        self.style = style
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.gn = nn.GroupNorm(1 if style == "one" else 2, 6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.inorm = nn.InstanceNorm2d(6, affine=True)
        self.inorm2 = nn.InstanceNorm2d(6)
        self.fc = nn.Linear(6, 10)
        for m in (self.gn, self.inorm) if style != "untrained" else (self.gn,):  # "untrained": the InstanceNorm2d's ones and zeros
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = F.relu(self.gn(self.conv1(x)))
        x = self.inorm2(F.relu(self.inorm(self.conv2(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class GrayToColour(nn.Module):
    """Grayscale images fed to a network made for three channels, as users adapt ImageNet models:
    x.expand(-1, 3, -1, -1) (exported as a Where/Equal shape computation and an Expand), or
    x.repeat(1, 3, 1, 1) (an Expand to its own shape, then a Tile); "tilemid": a map of 4
    channels repeated twice in the middle of the network (x.repeat(1, 2, 1, 1))."""

    def __init__(self, style="expand"):
        super().__init__()
        self.style = style
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = x.expand(-1, 3, -1, -1) if self.style == "expand" else x.repeat(1, 3, 1, 1)
        x = F.relu(self.conv(x))
        if self.style == "tilemid":
            x = F.relu(self.conv2(x.repeat(1, 2, 1, 1)))
        return self.fc(x.mean((2, 3)))


class LayerNormNet(nn.Module):
    """nn.LayerNorm over all of each image's values, read as GroupNorm(1, C): nn.LayerNorm(16) on
    the [N, 16] features of a head ("features"; opset 17 writes LayerNormalization, earlier ones
    ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, then the weight and bias as Mul and Add), or
    nn.LayerNorm([4, 8, 8]) on maps whose weight and bias are one value per channel ("maps"). The
    affine parameters are drawn away from 1 and 0."""

    def __init__(self, style="features"):
        super().__init__()
        self.style = style
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.ln_maps = nn.LayerNorm([4, 8, 8])
        self.fc1 = nn.Linear(4, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 10)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)
            self.ln_maps.weight.copy_(torch.rand(4, 1, 1).expand(4, 8, 8) + 0.5)
            self.ln_maps.bias.copy_(torch.rand(4, 1, 1).expand(4, 8, 8) - 0.5)

    def forward(self, x):
        x = F.relu(self.conv(x))
        if self.style == "maps":
            x = F.relu(self.ln_maps(x))
        x = x.mean((2, 3))
        return self.fc2(F.relu(self.ln(self.fc1(x))))


class ConstInside(nn.Module):
    """Constants on maps where no layer before can take them, read as depthwise 1x1 convolutions:
    a per-channel layer scale gamma on a residual branch after its ReLU (CaiT/ConvNeXt style),
    a scalar alpha times relu(x) added back to x (x has two readers), torch.add(z, y, alpha=2) with
    y a ReLU's output that conv2 reads too, 1 - x after a pool, and (x + 0.5) / 3 on a pooled map."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(6, 1, 1) + 0.25)
        self.alpha = nn.Parameter(torch.tensor(0.7))
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        x = y + self.gamma * F.relu(self.conv2(y))  # layer scale after a ReLU
        x = x + self.alpha * F.relu(x)              # x read twice
        z = torch.add(self.conv2(x), F.relu(x), alpha=2)
        z = 1 - F.max_pool2d(z, 2)
        z = (z + 0.5) / 3
        return self.fc(z.flatten(1))


class SubBranches(nn.Module):
    """Differences of two activations and negations on maps: nn.Tanhshrink (x - tanh(x)), the
    difference of two convolution branches, a unary minus after a pool (Neg, a depthwise 1x1 Conv
    of weight -1), and a minus right after a Linear (Neg folded into it)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 6, 1)
        self.shrink = nn.Tanhshrink()
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        y = self.shrink(self.conv1(x))
        y = F.relu(self.conv2(y)) - self.conv3(y)  # two branches
        y = -F.max_pool2d(y, 2)
        return -self.fc(y.flatten(1))


class FlatConstants(nn.Module):
    """Constants on flat features away from the layer that makes them, folded back into it: a
    shift after a global average pool (into conv2's bias), a per-feature gain after a ReLU and a
    Dropout (into fc1), a factor after a Concat (into both parts), and the mean of two heads plus a
    shift ((a + b) / 2 + 0.5: the factor into both heads, the shift into one)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 6)
        self.fc3 = nn.Linear(12, 6)
        self.drop = nn.Dropout(0.3)
        self.head_a = nn.Linear(12, 10)
        self.head_b = nn.Linear(12, 10)
        self.register_buffer("gain", torch.linspace(0.5, 2.0, 12))

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.conv1(x)), 2)
        g = self.conv2(y).mean((2, 3)) - 0.2
        h = self.drop(F.relu(self.fc1(g))) * self.gain
        h = F.leaky_relu(torch.cat([self.fc2(h), self.fc3(h)], 1) * 2.0, 0.1)
        return (self.head_a(h) + self.head_b(h)) / 2 + 0.5


class GainsBeforeLinear(nn.Module):
    """Constants on flat features that cannot fold back (a Tanh, SiLU, Sigmoid, GELU or Hardswish
    lies between them and the layer that makes the features), read only by Linears: a gain
    (tanh(h) * 3), a scale and shift in a row (sigmoid(h) * 2 - 1), a negation (-gelu(h)), a
    reversed Sub (1 - tanh(h)), a division (hardswish(h) / 4), a negative factor and a shift after a
    ReLU (which cannot pass it back into the Linear before), and a per-feature gain buffer with
    negative entries after SiLU, read by two Linears. QuantScope folds each into the Linears that
    read it, as a BatchNorm1d before a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(12, 12, bias=False)
        self.fc4 = nn.Linear(12, 10)
        self.fc5 = nn.Linear(10, 10)
        self.fc6 = nn.Linear(10, 10)
        self.fc7 = nn.Linear(10, 10)
        self.fc8 = nn.Linear(10, 10)
        self.head_a = nn.Linear(10, 10)
        self.head_b = nn.Linear(10, 10)
        self.register_buffer("gain", torch.linspace(-1.5, 2.0, 10))

    def forward(self, x):
        f = F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1)
        h = self.fc2(torch.tanh(self.fc1(f)) * 3.0)
        h = self.fc3(torch.sigmoid(h) * 2 - 1)
        h = self.fc4(-F.gelu(h))
        h = self.fc5(1 - torch.tanh(h))
        h = self.fc6(F.hardswish(h) / 4.0)
        h = self.fc7(F.relu(h) * -0.5)  # a negative factor cannot pass the ReLU back: forward, into fc7
        h = self.fc8(F.relu(h) - 0.25)  # nor a shift
        g = F.silu(h) * self.gain
        return self.head_a(g) + self.head_b(g)


class ChannelGather(nn.Module):
    """Lists of channels taken with a Gather on axis 1: x[:, [2, 1, 0]] on the input (a model
    ported from Caffe that swaps RGB to BGR), a selection with a repeat and a negative index inside
    the network, and a list of flat features before the head. QuantScope reads each as a 1x1 Conv
    (a Linear on features) with one-hot weights."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 8, 3, padding=1)
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        y = F.relu(self.conv1(x[:, [2, 1, 0]]))
        y = F.relu(self.conv2(y[:, [0, 3, 3, 5, -2]]))
        h = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(h[:, [7, 1, 2, 0, 4]])


class ComputedWeights(nn.Module):
    """Weights the graph computes from parameters, which QuantScope folds: weight standardisation
    (timm's StdConv2d, BiT: (w - mean) / sqrt(var + eps) per filter, through ReduceMean, Sub, Mul,
    Add, Sqrt, Div) and nn.utils.weight_norm (g v / ||v|| per filter, through ReduceL2); and BiT's
    head, a 1x1 Conv on the pooled map taken as x[:, :, 0, 0] (two Gathers of index 0)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.conv2 = nn.utils.weight_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, 10, 1)

    def forward(self, x):
        w = self.conv1.weight
        v, m = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
        y = F.conv2d(x, (w - m) / torch.sqrt(v + 1e-6), None, 1, 1)
        y = F.relu(self.gn(y))
        y = F.relu(self.conv2(y))
        y = self.head(F.adaptive_avg_pool2d(y, 1))
        return y[:, :, 0, 0]


class OptionAShortcut(nn.Module):
    """A CIFAR ResNet's option A shortcut (the LambdaLayer of the widely copied CIFAR-10 ResNet20
    code): F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) added to a strided block's output, on
    odd-sized maps (9 -> 5); zeros padded to the channels alone (F.pad(x, (0, 0, 0, 0, 2, 1)));
    and x[:, :, ::2, ::3] read by two layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.conv4 = nn.Conv2d(19, 4, 1)
        self.fc = nn.Linear((4 + 19) * 3 * 2, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        short = F.pad(y[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4), "constant", 0)
        z = F.relu(self.bn2(self.conv2(y)))
        z = F.relu(self.conv3(z) + short)
        v = F.pad(z, (0, 0, 0, 0, 2, 1))[:, :, ::2, ::3]
        return self.fc(torch.cat([self.conv4(v), F.relu(v)], 1).flatten(1))


class SpaceToDepth(nn.Module):
    """A space-to-depth stem written with strided slices (YOLOv5's Focus, TResNet's stem):
    torch.cat of x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2] along
    the channels, and an offset crop x[:, :, 1:, 2:] to the end."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 3 * 2, 10)

    def forward(self, x):
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        y = F.relu(self.conv(x))[:, :, 1:, 2:]
        return self.fc(y.flatten(1))


class PowSquare(nn.Module):
    """Squares of activations: x ** 2 after a pool and torch.pow(x, 2.0) on a ReLU's output that
    the next conv reads too (Pow, read as the Mul of x with itself), and torch.pow(x, 1) (Pow 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 10)

    def forward(self, x):
        y = F.max_pool2d(self.conv1(x), 2) ** 2
        z = F.relu(self.conv2(y))
        y = torch.pow(z, 2.0) + self.conv2(z)
        y = torch.pow(F.max_pool2d(y, 2), 1)
        return self.fc(y.flatten(1))


class PadNet(nn.Module):
    """Padding as a layer of its own: Conv2d(padding_mode='reflect') and ('replicate') export as
    Pad (reflect, edge) then a Conv without padding; F.pad with zeros read by a MaxPool (which pads
    with -inf, so the zeros cannot merge into it); an asymmetric reflect F.pad before the head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, padding_mode="replicate")
        self.fc = nn.Linear(6 * 6 * 6, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x)) - 0.25
        x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 2)
        x = F.pad(x, (0, 1, 0, 1), mode="reflect")
        return self.fc(x.flatten(1))


class PadThenNormalise(nn.Module):
    """LeNet-5 on 28 x 28 digits written as the paper's 32 x 32: F.pad(x, (2, 2, 2, 2)) on the raw
    pixels, then the model's own normalisation (x - 0.1307) / 0.3081, so the border becomes
    -0.1307 / 0.3081 (tst_onnx_import_input: the graph takes [0, 1] pixels as they are)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = (F.pad(x, (2, 2, 2, 2)) - 0.1307) / 0.3081
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


class SharedInputNorm(nn.Module):
    """The graph input read raw and normalised (tst_onnx_import_input): two normalisations side by
    side ((x - 0.5) / 0.5 and (x - mean) / 0.35 per channel) and a branch on the raw pixels, joined
    by Concat; moving the normalisation out of the graph would feed every branch normalised pixels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        a = (x - 0.5) / 0.5
        b = (x - self.mean) / 0.35
        y = torch.cat([self.conv1(a), self.conv2(b), self.conv3(x)], 1)
        y = F.max_pool2d(F.relu(y), 2)
        return self.fc(y.flatten(1))


class ClampThenNorm(nn.Module):
    """x.clamp(0, 1) on the raw pixels, then the model's own (x - 0.2860) / 0.3530: the
    normalisation stays in the graph (depthwise Convs) and the graph takes [0, 1] pixels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = (x.clamp(0, 1) - 0.2860) / 0.3530
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


class ViewInput(nn.Module):
    """The MNIST tutorials' x.view(-1, 1, 8, 8) first: a no-op on [N, 1, 8, 8] images, and an
    un-flattening on a flat [N, 64] input; then a conv used twice (shared weights)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 1, 8, 8)
        x = F.relu(self.conv(F.relu(self.conv(x))))
        return self.fc(x.reshape(x.size(0), -1))


class SharedCallCollide(nn.Module):
    """A conv called twice beside a module of its own named conv_1: PyTorch scopes both the
    second call and that module "/conv_1" (tester 20)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.conv_1 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.conv(x))
        x = F.relu(self.conv(x))
        x = F.relu(self.conv_1(x))
        return self.fc(x.reshape(x.size(0), -1))


class TiedConv(nn.Module):
    """Two convs of one tied weight (b.weight = a.weight; b keeps its own bias): b has no weight of
    its own in the file, and its layer keeps b's name."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.b.weight = self.a.weight
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.a(F.relu(self.stem(x))))
        x = F.relu(self.b(x))
        return self.fc(x.reshape(x.size(0), -1))


class CaffeMean(nn.Module):
    """Caffe's preprocessing written into the graph: 0..255 BGR pixels minus a per-channel mean,
    no division. Exported with PyTorch's own input and output names (no input_names)."""
    pixels255 = True
    default_names = True

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([103.94, 116.78, 123.68]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv.weight.data *= 0.01  # inputs of +-130
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = x - self.mean
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class ReciprocalStd(nn.Module):
    """(x - m) * (1 / s) with per-channel buffers m and s: without constant folding the graph keeps
    a Reciprocal of the constant s."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = (x - self.mean) * (1.0 / self.std)
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class ConvHead(nn.Module):
    """Flat features viewed as [N, K, 1, 1] (h.view(h.size(0), -1, 1, 1)) before a 1x1 Conv head,
    flattened after it: the conv is a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 12)
        self.head = nn.Conv2d(12, 10, 1)

    def forward(self, x):
        h = F.relu(self.fc(torch.flatten(F.relu(self.conv(x)), 1)))
        return torch.flatten(self.head(h.view(h.size(0), -1, 1, 1)), 1)


class UnsqueezeHead(nn.Module):
    """h[:, :, None, None] (Unsqueeze) on flat features, then 1x1 Conv + BatchNorm + ReLU6, a
    1x1 Conv, and x.squeeze(-1).squeeze(-1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.expand = nn.Conv2d(6, 16, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        h = torch.flatten(self.pool(F.relu(self.conv(x))), 1)
        h = F.relu6(self.bn(self.expand(h[:, :, None, None])))
        return self.head(h).squeeze(-1).squeeze(-1)


class ConvScores(nn.Module):
    """Global average pooling and a 1x1 Conv classifier with no flatten: the output is
    [N, classes, 1, 1]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Conv2d(8, 10, 1)

    def forward(self, x):
        return self.classifier(self.pool(F.relu(self.conv(x))))


class ConstOps(nn.Module):
    """Constant arithmetic on layer outputs, folded into the layer before: a frozen BatchNorm
    (conv(x) * a + b, per channel), conv(x) - 0.5, a scaled residual x + 0.2 * h, torch.add(x, h,
    alpha=2) and a Linear's output / 2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.register_buffer("a", torch.rand(1, 4, 1, 1) + 0.5)
        self.register_buffer("b", torch.randn(1, 4, 1, 1) * 0.1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x) * self.a + self.b)
        x = F.relu(x + 0.2 * self.conv2(x))
        x = torch.add(x, self.conv3(x) - 0.5, alpha=2)
        return self.fc(F.max_pool2d(F.relu(x), 2).flatten(1)) / 2.0


class WholeMapAvg(nn.Module):
    """Global average pooling of a non-square map written as F.avg_pool2d(x, x.shape[2:]): an
    AveragePool whose kernel is the whole map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(F.avg_pool2d(x, x.shape[2:]).flatten(1))


class BufferOps(nn.Module):
    """An input normalisation whose buffers pass through constant arithmetic that stays in the
    graph without constant folding: mean.expand_as(x), exp(log_std).clamp(min=1e-3) ** 1.0."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("log_std", torch.log(torch.tensor([0.229, 0.224, 0.225])).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = (x - self.mean.expand_as(x)) / (torch.exp(self.log_std).clamp(min=1e-3) ** 1.0).abs()
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class GapIdioms(nn.Module):
    """Global average pooling written through a [N, C, H*W] view: x.view(N, C, -1).mean(-1) on
    one branch, x.flatten(2).mean(2, keepdim=True).squeeze(-1) on the other."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        a = x.view(x.size(0), x.size(1), -1).mean(-1)
        b = x.flatten(2).mean(2, keepdim=True).squeeze(-1)
        return self.fc(a + b)


class GapIdioms2(nn.Module):
    """Global pooling as more user code writes it: x.mean(-1).mean(-1), x.sum((2, 3)) / (H * W),
    x.mean(-2, keepdim=True).mean(-1, keepdim=True) flattened, and global maxima x.amax((2, 3)) and
    x.max(-1)[0].max(-1)[0] of a square map, summed into the classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        a = x.mean(-1).mean(-1)
        b = x.sum((2, 3)) / (x.shape[2] * x.shape[3])
        c = x.mean(-2, keepdim=True).mean(-1, keepdim=True).flatten(1)
        d = x.amax((2, 3))
        e = x.max(-1)[0].max(-1)[0]
        return self.fc(a + b + c + d + e)


class BNNeck(nn.Module):
    """Global average pooling, flatten, BatchNorm1d, then the Linear classifier (re-ID's BNNeck):
    a BatchNorm1d no Linear made, folded into the Linear after it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.neck = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)
        return self.fc(self.neck(x))



class ContextAdd(nn.Module):
    """GCNet's context block: x + t(pool(x)), a map plus a [N, C, 1, 1] transform of its global
    context, broadcast over H and W; here also the other order (t + x, the ReLU right on the sum)
    and a gate made by Linears and .view(b, c, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.t1 = nn.Conv2d(8, 4, 1)
        self.ln = nn.LayerNorm([4, 1, 1])
        self.t2 = nn.Conv2d(4, 8, 1)
        self.c2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.l1 = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = x + self.t2(F.relu(self.ln(self.t1(F.adaptive_avg_pool2d(x, 1)))))
        x = self.bn(self.c2(x))
        b, c, _, _ = x.size()
        g = self.l1(F.adaptive_avg_pool2d(x, 1).view(b, c)).view(b, c, 1, 1)
        x = F.relu(g + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ChannelPlanes(nn.Module):
    """Per-channel code that takes the planes one by one with x[:, i] (a Gather of one index on
    axis 1, the channel axis dropped): normalisation written as torch.stack of (x[:, i] - m[i]) /
    s[i], and inside the network a plane scaled by a constant and put back with unsqueeze(1) and
    torch.cat. QuantScope reads x[:, i] as the one-hot 1x1 Conv of [i], viewed as [H, W]."""

    def __init__(self):
        super().__init__()
        self.m = [0.49, 0.48, 0.45]
        self.s = [0.25, 0.24, 0.26]
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = torch.stack([(x[:, i] - self.m[i]) / self.s[i] for i in range(3)], 1)
        y = F.relu(self.conv1(x))
        y = torch.cat([y, (y[:, 2] * 0.5).unsqueeze(1)], 1)
        y = F.relu(self.conv2(y))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class ChannelPlanesUnbind(ChannelPlanes):
    """The same with the planes from x.unbind(1) (a Split, then a Squeeze of each part), in BGR
    order, and a plane put back by torch.stack with another's scaled copy."""

    def forward(self, x):
        r, g, b = x.unbind(1)
        x = torch.stack([(b - self.m[2]) / self.s[2], (g - self.m[1]) / self.s[1], (r - self.m[0]) / self.s[0]], 1)
        y = F.relu(self.conv1(x))
        p = y.unbind(1)
        y = torch.cat([y, torch.stack([p[3] * 2.0], 1)], 1)
        y = F.relu(self.conv2(y))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


CASES = [
    ("seqview_op11_nofold_dyn", SeqView, (1, 12, 12), 11, False, True),
    ("seqview_op13_fold", SeqView, (1, 12, 12), 13, True, False),
    ("flatten_bn_op17_nofold", FlattenBN, (3, 10, 10), 17, False, True),
    ("flatten_bn_op13_fold_dyn", FlattenBN, (3, 10, 10), 13, True, True),
    ("residual_op13_fold_dyn", Residual, (1, 8, 8), 13, True, True),
    ("residual_op11_nofold", Residual, (1, 8, 8), 11, False, False),
    ("mobile_op11_fold_dyn", MobileBlock, (3, 8, 8), 11, True, True),
    ("mobile_op17_nofold_dyn", MobileBlock, (3, 8, 8), 17, False, True),
    ("padconv_op13_nofold", PadConv, (1, 9, 9), 13, False, False),
    ("padconv_op17_fold_dyn", PadConv, (1, 9, 9), 17, True, True),
    ("matmul_op13_nofold_dyn", MatMulHead, (1, 12, 12), 13, False, True),
    ("poolpad_op13_fold_dyn", PoolPad, (1, 12, 12), 13, True, True),
    ("squeeze_op11_nofold", SqueezeHead, (1, 8, 8), 11, False, False),
    ("squeeze_op13_fold_dyn", SqueezeHead, (1, 8, 8), 13, True, True),
    ("squeezeall_op13_fold", SqueezeAllHead, (1, 8, 8), 13, True, False),
    ("flatmlp_op13_fold_dyn", FlatMLP, (64,), 13, True, True),
    ("flatmlp_op11_nofold", FlatMLP, (64,), 11, False, False),
    ("flatmlpbn_op13_fold_dyn", FlatMLPBN, (64,), 13, True, True),
    ("flatmlpbn_op11_nofold", FlatMLPBN, (64,), 11, False, False),
    ("imgmlp_op13_fold_dyn", ImageMLP, (1, 8, 8), 13, True, True),
    ("imgmlpview_op11_nofold", ImageMLPView, (1, 8, 8), 11, False, False),
    ("clampchain_op13_fold_dyn", ClampChain, (1, 8, 8), 13, True, True),
    ("clampchain_op11_nofold", ClampChain, (1, 8, 8), 11, False, False),
    ("pixels255_op13_fold_dyn", Pixels255, (1, 8, 8), 13, True, True),
    ("pixels255mul_op11_nofold", Pixels255Mul, (1, 8, 8), 11, False, False),
    ("viewinput_op13_fold_dyn", ViewInput, (1, 8, 8), 13, True, True),
    ("viewflat_op11_nofold", ViewInput, (64,), 11, False, False),
    ("caffemean_op13_fold", CaffeMean, (3, 8, 8), 13, True, False),
    ("reciprocal_op11_nofold", ReciprocalStd, (3, 8, 8), 11, False, False),
    ("convhead_op11_nofold_dyn", ConvHead, (1, 8, 8), 11, False, True),
    ("convhead_op13_fold", ConvHead, (1, 8, 8), 13, True, False),
    ("unsqueezehead_op11_nofold", UnsqueezeHead, (1, 8, 8), 11, False, False),
    ("unsqueezehead_op13_fold_dyn", UnsqueezeHead, (1, 8, 8), 13, True, True),
    ("convscores_op13_fold_dyn", ConvScores, (1, 8, 8), 13, True, True),
    ("constops_op11_nofold", ConstOps, (1, 8, 8), 11, False, False),
    ("constops_op13_fold_dyn", ConstOps, (1, 8, 8), 13, True, True),
    ("wholemapavg_op11_nofold", WholeMapAvg, (1, 6, 10), 11, False, False),
    ("bufferops_op13_nofold_dyn", BufferOps, (3, 8, 8), 13, False, True),
    ("gapidioms_op11_nofold", GapIdioms, (1, 6, 7), 11, False, False),
    ("gapidioms_op13_fold_dyn", GapIdioms, (1, 6, 7), 13, True, True),
    ("gapidioms2_op11_nofold", GapIdioms2, (1, 7, 7), 11, False, False),
    ("gapidioms2_op13_fold_dyn", GapIdioms2, (1, 7, 7), 13, True, True),
    ("bnneck_op11_nofold", BNNeck, (1, 8, 8), 11, False, False),
    ("bnneck_op15_fold_dyn", BNNeck, (1, 8, 8), 15, True, True),
    ("wholemapavg_op13_fold", WholeMapAvg, (1, 9, 5), 13, True, False),
    ("act_sigmoid_op13_fold_dyn", act_net(nn.Sigmoid), (1, 8, 8), 13, True, True),
    ("act_tanh_op11_nofold", act_net(nn.Tanh), (1, 8, 8), 11, False, False),
    ("act_silu_op13_fold_dyn", act_net(nn.SiLU), (1, 8, 8), 13, True, True),
    ("act_silurev_op11_nofold", act_net(SigmoidTimesX), (1, 8, 8), 11, False, False),
    ("act_hardsigmoid_op13_fold", act_net(nn.Hardsigmoid), (1, 8, 8), 13, True, False),
    ("act_hardswish_op13_fold_dyn", act_net(nn.Hardswish), (1, 8, 8), 13, True, True),
    ("act_hardswish_op14_nofold", act_net(nn.Hardswish), (1, 8, 8), 14, False, False),
    ("act_leakyrelu_op13_fold", act_net(lambda: nn.LeakyReLU(0.1)), (1, 8, 8), 13, True, False),
    ("act_elu_op11_nofold", act_net(lambda: nn.ELU(0.7)), (1, 8, 8), 11, False, False),
    ("act_gelu_op13_fold_dyn", act_net(nn.GELU), (1, 8, 8), 13, True, True),
    ("act_gelu_op11_nofold", act_net(nn.GELU), (1, 8, 8), 11, False, False),
    ("act_geluhalf_op17_fold", act_net(GeluHalfFirst), (1, 8, 8), 17, True, False),
    ("se_conv_sigmoid_op13_fold_dyn", SEConv, (3, 8, 8), 13, True, True),
    ("se_conv_hardsigmoid_op11_nofold", lambda: SEConv(nn.Hardsigmoid, gate_first=True), (3, 8, 8), 11, False, False),
    ("se_conv_hardsigmoid_op17_fold_dyn", lambda: SEConv(nn.Hardsigmoid, gate_first=True), (3, 8, 8), 17, True, True),
    ("se_linear_view_op13_fold_dyn", SELinearView, (3, 8, 8), 13, True, True),
    ("se_linear_view_op11_nofold", SELinearView, (3, 8, 8), 11, False, False),
    ("se_linear_flat_op17_fold", SELinearFlat, (3, 8, 8), 17, True, False),
    ("gate_mul_op13_fold_dyn", GateMul, (1, 8, 8), 13, True, True),
    ("dense_concat_op13_fold_dyn", DenseBlock, (3, 8, 8), 13, True, True),
    ("dense_concat_op11_nofold", DenseBlock, (3, 8, 8), 11, False, False),
    ("inception_concat_op13_fold_dyn", Inception, (1, 8, 8), 13, True, True),
    ("inception_concat_op17_nofold", lambda: Inception(neg_dim=True), (1, 8, 8), 17, False, False),
    # GELU's tanh approximation: refused by name (tst_onnx_import_errors).
    ("act_gelutanh_op13_fold", act_net(lambda: nn.GELU(approximate="tanh")), (1, 8, 8), 13, True, False),
    # dynamic_axes on the batch, the height and the width ("hw"): the JSON also holds PyTorch's
    # output at a second size (input2/output2), HW_SECOND; SeqView's flattened classifier takes
    # only the size it was built for.
    ("residual_op13_fold_dynhw", Residual, (1, 8, 8), 13, True, "hw"),
    ("mobile_op11_nofold_dynhw", MobileBlock, (3, 8, 8), 11, False, "hw"),
    ("seqview_op17_nofold_dynhw", SeqView, (1, 12, 12), 17, False, "hw"),
    # export_modules_as_functions=True ("fn", opset 15+): every module a local function.
    ("residual_op15_fold_fn", Residual, (1, 8, 8), 15, True, "fn"),
    ("mobile_op17_nofold_fn", MobileBlock, (3, 8, 8), 17, False, "fn"),
    ("se_conv_sigmoid_op15_nofold_fn", SEConv, (3, 8, 8), 15, False, "fn"),
    ("act_silu_op16_fold_fn", act_net(nn.SiLU), (1, 8, 8), 16, True, "fn"),
    # Convolution windows that are not square (tst_conv_geometry).
    ("convgeom_op11_nofold", ConvGeometry, (3, 12, 11), 11, False, False),
    ("convgeom_op13_fold_dyn", ConvGeometry, (3, 12, 11), 13, True, True),
    ("convgeom_op17_fold", ConvGeometry, (3, 12, 11), 17, True, False),
    ("convgeom_op17_nofold_dyn", ConvGeometry, (3, 12, 11), 17, False, True),
    # PReLU (a slope per channel, shared, per feature) and GELU's tanh approximation, read as layers
    # (tst_prelu); the hand-written GELU with kappa 0.05 is refused (tst_onnx_import_errors).
    ("prelu_op11_nofold", PReluNet, (1, 8, 8), 11, False, False),
    ("prelu_op13_fold_dyn", PReluNet, (1, 8, 8), 13, True, True),
    ("prelu_op17_nofold", PReluNet, (1, 8, 8), 17, False, False),
    ("act_gelutanh_op11_nofold", act_net(lambda: nn.GELU(approximate="tanh")), (1, 8, 8), 11, False, False),
    ("act_gelutanh_op17_fold_dyn", act_net(lambda: nn.GELU(approximate="tanh")), (1, 8, 8), 17, True, True),
    ("act_gelutanh_op13_nofold", act_net(lambda: nn.GELU(approximate="tanh")), (1, 8, 8), 13, False, False),
    ("act_gelutanhpow_op13_fold", act_net(GeluTanhByHand), (1, 8, 8), 13, True, False),
    ("act_gelutanhbad_op13_fold", act_net(lambda: GeluTanhByHand(0.05)), (1, 8, 8), 13, True, False),
    # Max pooling windows that are not square: ceil_mode, rectangular kernels and strides, a global
    # max of a non-square map (tst_pool_geometry).
    ("poolgeom_max_op11_nofold", MaxPoolGeometry, (3, 13, 11), 11, False, False),
    ("poolgeom_max_op13_fold_dyn", MaxPoolGeometry, (3, 13, 11), 13, True, True),
    ("poolgeom_max_op17_fold", MaxPoolGeometry, (3, 13, 11), 17, True, False),
    ("poolgeom_amax_op13_fold", MaxOverMap, (3, 7, 10), 13, True, False),
    ("poolgeom_max2step_op11_nofold", lambda: MaxOverMap(two_step=True), (3, 7, 10), 11, False, False),
    # Average pooling windows that are not square: ceil_mode, count_include_pad=False (tst_pool_geometry).
    ("poolgeom_avg_op11_nofold", AvgPoolGeometry, (3, 13, 11), 11, False, False),
    ("poolgeom_avg_op13_fold_dyn", AvgPoolGeometry, (3, 13, 11), 13, True, True),
    ("poolgeom_avg_op17_fold", AvgPoolGeometry, (3, 13, 11), 17, True, False),
    # export_modules_as_functions={Block} ("fnblock"): only the blocks are functions, called from
    # the main graph as "/layer1/Block" (their layers take the call's module path, tst_onnx_functions).
    ("residual_op15_fold_fnblock", Residual, (1, 8, 8), 15, True, "fnblock"),
    # Opsets 9 and 10, as export scripts written for older onnxruntimes still ask for: Slice's
    # starts/ends (9), Clip's bounds, Pad's pads, Squeeze's and Unsqueeze's axes and Dropout's ratio
    # as attributes; MaxPool's ceil_mode only from 10 (at 9 torch pads the window instead, which
    # the importer refuses, tst_onnx_import_errors); AveragePool padding written as a Pad node.
    ("gapidioms_op9_nofold", GapIdioms, (1, 6, 7), 9, False, False),
    ("padconv_op9_nofold", PadConv, (1, 9, 9), 9, False, False),
    ("flatten_bn_op9_fold", FlattenBN, (3, 10, 10), 9, True, False),
    ("seqview_op9_nofold_dyn", SeqView, (1, 12, 12), 9, False, True),
    ("convhead_op9_nofold", ConvHead, (1, 8, 8), 9, False, False),
    ("bnneck_op9_nofold", BNNeck, (1, 8, 8), 9, False, False),
    ("mobile_op10_nofold_dyn", MobileBlock, (3, 8, 8), 10, False, True),
    ("residual_op10_fold_dyn", Residual, (1, 8, 8), 10, True, True),
    ("dense_concat_op10_nofold", DenseBlock, (3, 8, 8), 10, False, False),
    ("poolgeom_max_op10_fold", MaxPoolGeometry, (3, 13, 11), 10, True, False),
    ("poolgeom_max_op9_nofold", MaxPoolGeometry, (3, 13, 11), 9, False, False),
    # Clip with bounds other than ReLU's and ReLU6's, read as Hardtanh layers (tst_activations):
    # nn.Hardtanh (its bounds as attributes at opset 9, inputs since), F.hardtanh's default (-1, 1),
    # torch.clamp with both bounds, only a lower one, only an upper one.
    ("act_hardtanh_op9_nofold", act_net(lambda: nn.Hardtanh(-0.5, 2.0)), (1, 8, 8), 9, False, False),
    ("act_hardtanh_op13_fold_dyn", act_net(lambda: nn.Hardtanh(-0.5, 2.0)), (1, 8, 8), 13, True, True),
    ("act_hardtanhdefault_op17_nofold", act_net(nn.Hardtanh), (1, 8, 8), 17, False, False),
    ("act_clamp_op11_nofold", act_net(lambda: Clamp(-0.75, 1.25)), (1, 8, 8), 11, False, False),
    ("act_clampmin_op13_fold", act_net(lambda: Clamp(-1.0, None)), (1, 8, 8), 13, True, False),
    ("act_clampmax_op11_fold_dyn", act_net(lambda: Clamp(None, 1.5)), (1, 8, 8), 11, True, True),
    ("act_clampmax_op9_nofold", act_net(lambda: Clamp(None, 1.5)), (1, 8, 8), 9, False, False),
    # uint8 pixels in, cast to float32 first (tst_onnx_import_input).
    ("bytes_div_op13_fold_dyn", BytesInput, (1, 8, 8), 13, True, True),
    ("bytes_norm_op11_nofold", lambda: BytesInput("norm"), (3, 8, 8), 11, False, False),
    ("bytes_raw_op17_fold", lambda: BytesInput("raw"), (1, 8, 8), 17, True, False),
    # Hardswish and Hardsigmoid written by hand (tst_activations).
    ("act_hswishhand_op13_fold", act_net(lambda: HardByHand("swish")), (1, 8, 8), 13, True, False),
    ("act_hswishhand_op11_nofold", act_net(lambda: HardByHand("swish")), (1, 8, 8), 11, False, False),
    ("act_hswishinner_op17_nofold_dyn", act_net(lambda: HardByHand("swish_inner")), (1, 8, 8), 17, False, True),
    ("act_hswishhand_op9_nofold", act_net(lambda: HardByHand("swish")), (1, 8, 8), 9, False, False),
    ("act_hsigmoidhand_op13_fold", act_net(lambda: HardByHand("sigmoid")), (1, 8, 8), 13, True, False),
    ("act_hsigmoidmul_op11_nofold", act_net(lambda: HardByHand("sigmoid_mul")), (1, 8, 8), 11, False, False),
    # ShuffleNetV2-style channel split and shuffle (tst_channel_ops).
    ("shuffle_chunk_view_op13_fold_dyn", ShuffleTiny, (1, 8, 8), 13, True, True),
    ("shuffle_chunk_view_op11_nofold", ShuffleTiny, (1, 8, 8), 11, False, False),
    ("shuffle_split_permute_op13_fold", lambda: ShuffleTiny("split", "permute", (6, 10)), (1, 8, 8), 13, True, False),
    ("shuffle_split_view_op17_nofold_dyn", lambda: ShuffleTiny("split", "view", (8, 8)), (1, 8, 8), 17, False, True),
    ("shuffle_index_permute_op11_fold_dyn", lambda: ShuffleTiny("index", "permute", (4, 12)), (1, 8, 8), 11, True, True),
    ("shuffle_index_view_op9_nofold", lambda: ShuffleTiny("index", "view", (8, 8)), (1, 8, 8), 9, False, False),
    # Grayscale images as [N, H, W], without the channel axis (tst_onnx_import_input); last, so that the
    # cases before them keep their seeds.
    ("grayunsqueeze_op13_fold_dyn", GrayInput, (8, 8), 13, True, True),
    ("grayunsqueeze_op11_nofold", GrayInput, (8, 8), 11, False, False),
    ("grayflat_op17_fold", lambda: GrayInput("flat"), (8, 8), 17, True, False),
    ("grayview_op13_nofold_dyn", ViewInput, (8, 8), 13, False, True),
    # Channels-last colour images, permuted to [N, C, H, W] by the first node (tst_onnx_import_input).
    ("channelslast_op13_fold_dyn", ChannelsLast, (8, 8, 3), 13, True, True),
    ("channelslast_op11_nofold", ChannelsLast, (8, 8, 3), 11, False, False),
    # Maps permuted to channels-last before the flatten into the Linear, as a Keras port does
    # (tst_onnx_import_input); the softmax over that axis is refused (tst_onnx_import_errors).
    ("kerasflatten_op13_fold_dyn", KerasFlatten, (3, 8, 6), 13, True, True),
    ("kerasflatten_reshape_op11_nofold", lambda: KerasFlatten("reshape"), (3, 8, 6), 11, False, False),
    ("kerasflatten_reshape_op17_fold_dyn", lambda: KerasFlatten("reshape"), (3, 8, 6), 17, True, True),
    ("kerasflatten_roundtrip_op13_nofold", lambda: KerasFlatten("roundtrip"), (3, 8, 6), 13, False, False),
    ("kerasflatten_softmax_op13_fold", lambda: KerasFlatten("softmax"), (3, 8, 6), 13, True, False),
    ("kerasflatten_silu_op11_nofold", lambda: KerasFlatten("silu"), (3, 8, 6), 11, False, False),
    # nn.GroupNorm and nn.InstanceNorm2d (InstanceNormalization)
    ("groupnorm_op13_fold_dyn", GroupNormNet, (3, 8, 8), 13, True, True),
    ("groupnorm_op11_nofold", GroupNormNet, (3, 8, 8), 11, False, False),
    ("groupnorm_one_op17_fold", lambda: GroupNormNet("one"), (3, 8, 8), 17, True, False),
    ("groupnorm_untrained_op13_fold", lambda: GroupNormNet("untrained"), (3, 8, 8), 13, True, False),
    # grayscale to three channels: x.expand(-1, 3, -1, -1) and x.repeat(1, 3, 1, 1)
    ("gray2rgb_expand_op13_fold_dyn", GrayToColour, (1, 8, 8), 13, True, True),
    ("gray2rgb_expand_op11_nofold", GrayToColour, (1, 8, 8), 11, False, False),
    ("gray2rgb_repeat_op17_nofold_dyn", lambda: GrayToColour("repeat"), (1, 8, 8), 17, False, True),
    ("gray2rgb_tilemid_op13_fold", lambda: GrayToColour("tilemid"), (1, 8, 8), 13, True, False),
    # nn.LayerNorm over all of each image's values (LayerNormalization at 17, a subgraph before)
    ("layernorm_op17_fold_dyn", LayerNormNet, (3, 8, 8), 17, True, True),
    ("layernorm_op13_nofold", LayerNormNet, (3, 8, 8), 13, False, False),
    ("layernorm_op11_fold", LayerNormNet, (3, 8, 8), 11, True, False),
    ("layernorm_maps_op13_fold_dyn", lambda: LayerNormNet("maps"), (3, 8, 8), 13, True, True),
    ("layernorm_maps_op17_nofold", lambda: LayerNormNet("maps"), (3, 8, 8), 17, False, False),
    # Constants inside the network, read as depthwise 1x1 Convs (tst_onnx_import).
    ("constinside_op13_fold_dyn", ConstInside, (3, 8, 8), 13, True, True),
    ("constinside_op11_nofold", ConstInside, (3, 8, 8), 11, False, False),
    ("constinside_op17_fold", ConstInside, (3, 8, 8), 17, True, False),
    # nn.Mish (Softplus, Tanh, Mul below opset 18) and nn.Softplus (tst_activations); beta 2 exports
    # as Mul(2), Softplus, Div(2): the Mul folds into the conv before, the Div is a depthwise 1x1 Conv.
    ("act_mish_op13_fold_dyn", act_net(nn.Mish), (1, 8, 8), 13, True, True),
    ("act_mish_op11_nofold", act_net(nn.Mish), (1, 8, 8), 11, False, False),
    ("act_mish_op17_nofold", act_net(nn.Mish), (1, 8, 8), 17, False, False),
    ("act_softplus_op13_fold", act_net(nn.Softplus), (1, 8, 8), 13, True, False),
    ("act_softplusbeta2_op13_fold_dyn", act_net(lambda: nn.Softplus(beta=2.0)), (1, 8, 8), 13, True, True),
    # Padding as a Pad layer: reflect and replicate convolutions, zeros before a MaxPool (tst_pad).
    ("pad_op13_fold_dyn", PadNet, (1, 8, 8), 13, True, True),
    ("pad_op11_nofold", PadNet, (1, 8, 8), 11, False, False),
    ("pad_op17_fold", PadNet, (1, 8, 8), 17, True, False),
    ("padnorm_op13_fold_dyn", PadThenNormalise, (1, 8, 8), 13, True, True),
    ("padnorm_op11_nofold", PadThenNormalise, (1, 8, 8), 11, False, False),
    # nn.SELU (Selu), nn.CELU (Celu, opset 12 on) and nn.Softsign (Abs, Add(1), Div) (tst_activations).
    ("act_selu_op13_fold_dyn", act_net(nn.SELU), (1, 8, 8), 13, True, True),
    ("act_selu_op11_nofold", act_net(nn.SELU), (1, 8, 8), 11, False, False),
    ("act_celu_op13_fold", act_net(lambda: nn.CELU(alpha=0.5)), (1, 8, 8), 13, True, False),
    ("act_celudefault_op17_nofold", act_net(nn.CELU), (1, 8, 8), 17, False, False),
    ("act_softsign_op13_fold_dyn", act_net(nn.Softsign), (1, 8, 8), 13, True, True),
    ("act_softsign_op11_nofold", act_net(nn.Softsign), (1, 8, 8), 11, False, False),
    ("act_softsign_op17_fold", act_net(nn.Softsign), (1, 8, 8), 17, True, False),
    # Sub of two activations (an Add and a depthwise 1x1 Conv of weight -1) and Neg (tst_onnx_import).
    ("subbranches_op13_fold_dyn", SubBranches, (3, 8, 8), 13, True, True),
    ("subbranches_op11_nofold", SubBranches, (3, 8, 8), 11, False, False),
    ("subbranches_op17_fold", SubBranches, (3, 8, 8), 17, True, False),
    ("powsquare_op13_fold_dyn", PowSquare, (3, 8, 8), 13, True, True),
    ("powsquare_op11_nofold", PowSquare, (3, 8, 8), 11, False, False),
    # Normalisations that must stay in the graph (tst_onnx_import_input): the input read raw too,
    # and a clamp before the normalisation.
    ("sharednorm_op13_fold_dyn", SharedInputNorm, (3, 8, 8), 13, True, True),
    ("sharednorm_op11_nofold", SharedInputNorm, (3, 8, 8), 11, False, False),
    ("clampnorm_op13_fold", ClampThenNorm, (1, 8, 8), 13, True, False),
    ("clampnorm_op11_nofold_dyn", ClampThenNorm, (1, 8, 8), 11, False, True),
    # Constants on flat features folded back through ReLU, Dropout, Concat, Add and the pool.
    ("flatconst_op13_fold_dyn", FlatConstants, (3, 8, 8), 13, True, True),
    ("flatconst_op11_nofold", FlatConstants, (3, 8, 8), 11, False, False),
    ("flatconst_op17_fold", FlatConstants, (3, 8, 8), 17, True, False),
    # Weights computed from parameters (weight standardisation, weight_norm), x[:, :, 0, 0] heads.
    ("computedw_op13_nofold_dyn", ComputedWeights, (3, 8, 8), 13, False, True),
    ("computedw_op11_nofold", ComputedWeights, (3, 8, 8), 11, False, False),
    ("computedw_op17_nofold", ComputedWeights, (3, 8, 8), 17, False, False),
    ("computedw_op13_fold", ComputedWeights, (3, 8, 8), 13, True, False),
    # x[:, :, ::2, ::2] and zeros padded to the channels (a CIFAR ResNet's option A shortcut).
    ("optiona_op13_fold_dyn", OptionAShortcut, (3, 9, 9), 13, True, True),
    ("optiona_op11_nofold", OptionAShortcut, (3, 9, 9), 11, False, False),
    ("optiona_op17_fold", OptionAShortcut, (3, 9, 9), 17, True, False),
    ("spacetodepth_op13_fold_dyn", SpaceToDepth, (3, 8, 8), 13, True, True),
    ("spacetodepth_op11_nofold", SpaceToDepth, (3, 8, 8), 11, False, False),
    ("convnext_tv_op13_fold_dyn", ConvNeXtTV, (3, 16, 16), 13, True, True),
    ("convnext_tv_op17_fold", ConvNeXtTV, (3, 16, 16), 17, True, False),
    ("convnext_cf_op13_nofold", ConvNeXtCF, (3, 16, 16), 13, False, False),
    ("convnext_cf_op17_fold_dyn", ConvNeXtCF, (3, 16, 16), 17, True, True),
    ("cbam_op13_fold_dyn", CBAMNet, (3, 10, 10), 13, True, True),
    ("cbam_op11_nofold", CBAMNet, (3, 10, 10), 11, False, False),
    ("cbam_op17_fold", CBAMNet, (3, 10, 10), 17, True, False),
    ("lnnoaffine_op17_fold", LayerNormNoAffine, (3, 4, 4), 17, True, False),
    ("lnnoaffine_op13_fold", LayerNormNoAffine, (3, 4, 4), 13, True, False),
    ("lnrsqrt_op13_fold_dyn", LayerNormRsqrt, (3, 5, 5), 13, True, True),
    ("lnrsqrt_op11_nofold", LayerNormRsqrt, (3, 5, 5), 11, False, False),
    ("lnvar_op13_fold", LayerNormVar, (3, 5, 5), 13, True, False),
    ("lnvar_op17_nofold_dyn", LayerNormVar, (3, 5, 5), 17, False, True),
    ("kerasmatmul_op13_fold_dyn", KerasMatMulHead, (3, 8, 6), 13, True, True),
    # Constants on flat features after a Tanh, SiLU, ..., folded into the Linears that read them.
    ("gainslinear_op13_fold_dyn", GainsBeforeLinear, (3, 8, 8), 13, True, True),
    ("gainslinear_op11_nofold", GainsBeforeLinear, (3, 8, 8), 11, False, False),
    ("gainslinear_op17_fold", GainsBeforeLinear, (3, 8, 8), 17, True, False),
    # Lists of channels (x[:, [2, 1, 0]]) and of features: 1x1 Convs and Linears of one-hot weights.
    ("gatherch_op13_fold_dyn", ChannelGather, (3, 8, 8), 13, True, True),
    ("gatherch_op11_nofold", ChannelGather, (3, 8, 8), 11, False, False),
    # A map plus a [N, C, 1, 1] gate of its channels (GCNet's context add), both orders.
    ("ctxadd_op13_fold_dyn", ContextAdd, (3, 8, 8), 13, True, True),
    ("ctxadd_op11_nofold", ContextAdd, (3, 8, 8), 11, False, False),
    ("ctxadd_op17_fold", ContextAdd, (3, 8, 8), 17, True, False),
    # x[:, i] planes: per-channel normalisation by torch.stack, a plane put back with unsqueeze + cat
    ("planes_op13_fold_dyn", ChannelPlanes, (3, 8, 8), 13, True, True),
    ("planes_op11_nofold", ChannelPlanes, (3, 8, 8), 11, False, False),
    ("planes_op17_fold", ChannelPlanes, (3, 8, 8), 17, True, False),
    ("planesunbind_op13_fold_dyn", ChannelPlanesUnbind, (3, 8, 8), 13, True, True),
    ("planesunbind_op11_nofold", ChannelPlanesUnbind, (3, 8, 8), 11, False, False),
    # nn.AvgPool2d(padding, ceil_mode=True) written as Pad + AveragePool, whose output size is
    # ONNX's or PyTorch's by the graph after it (tst_pool_geometry; the global head: refused).
    ("avgceilpad_op13_fold", AvgCeilPadded, (3, 7, 9), 13, True, False),
    ("avgceilpad_op11_nofold", AvgCeilPadded, (3, 7, 9), 11, False, False),
    ("avgceilpadgap_op13_fold", lambda: AvgCeilPadded(global_head=True), (3, 7, 9), 13, True, False),
    # A normalisation after x[:, [2, 1, 0]], and after grayscale copied to 3 channels (tester 15)
    ("bgrnorm_op13_fold_dyn", BgrNormalise, (3, 8, 8), 13, True, True),
    ("bgrnorm_op11_nofold", BgrNormalise, (3, 8, 8), 11, False, False),
    ("bgrcaffe_op13_fold", lambda: BgrNormalise("caffe"), (3, 8, 8), 13, True, False),
    ("grayrepeatnorm_op13_fold_dyn", GrayCopiesNormalise, (1, 8, 8), 13, True, True),
    ("grayexpandnorm_op11_nofold", lambda: GrayCopiesNormalise("expand"), (1, 8, 8), 11, False, False),
    ("graycatnorm_op17_fold", lambda: GrayCopiesNormalise("cat"), (1, 8, 8), 17, True, False),
    # torch.flip(x, [1]) then a normalisation; 1 - x and -x on the input (tester 15)
    ("bgrflip_op13_fold_dyn", lambda: BgrNormalise("flip"), (3, 8, 8), 13, True, True),
    ("invert_op13_fold_dyn", InvertInput, (1, 8, 8), 13, True, True),
    ("invert_op11_nofold", InvertInput, (1, 8, 8), 11, False, False),
    ("neginput_op13_fold", lambda: InvertInput("neg"), (1, 8, 8), 13, True, False),
    ("sharedcall_op13_fold_dyn", SharedCallCollide, (1, 8, 8), 13, True, True),
    ("sharedcall_op11_nofold", SharedCallCollide, (1, 8, 8), 11, False, False),
    ("bytesnhwc_op13_fold_dyn", lambda: BytesInput("nhwc"), (8, 8, 3), 13, True, True),
    ("bytesnhwcfloat_op11_nofold", lambda: BytesInput("nhwcfloat"), (8, 8, 3), 11, False, False),
    ("bytesgrayunsq_op13_fold", lambda: BytesInput("grayunsq"), (8, 8), 13, True, False),
    ("bytesgrayview_op11_nofold_dyn", lambda: BytesInput("grayview"), (8, 8), 11, False, True),
    ("tiedconv_op13_fold_dyn", TiedConv, (1, 8, 8), 13, True, True),
    ("mlpnobias_op11_nofold", FlatMLPNoBias, (64,), 11, False, False),
    ("elufirst_op13_nofold_dyn", lambda: ActFirst(F.elu), (3, 8, 8), 13, False, True),
    ("hardswishnhwc_op17_fold", lambda: ActFirst(F.hardswish, channels_last=True), (8, 8, 3), 17, True, False),
]

HW_SECOND = (12, 10)


def head_of(name, module):
    if isinstance(module, FlattenBN):
        return "log_softmax"
    if isinstance(module, (PadConv, ImageMLP)):
        return "softmax"
    return "logits"


def main():
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[2:])
    for i, (name, cls, chw, opset, fold, dynamic) in enumerate(CASES):
        if only and name not in only:
            continue
        torch.manual_seed(100 + i)
        model = cls()
        # Non-trivial BatchNorm statistics, as after training.
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.3, 0.3)
        model.eval()
        x = torch.randn(3, *chw)
        if isinstance(model, Pixels255) or getattr(model, "pixels255", False):
            x = torch.randint(0, 256, (3, *chw)).float()  # 0..255 pixels
        if getattr(model, "uint8_input", False):
            x = torch.randint(0, 256, (3, *chw), dtype=torch.uint8)  # the bytes themselves
        path = os.path.join(OUT, name + ".onnx")
        axes = {"input": {0: "N"}, "logits": {0: "N"}} if dynamic else None
        if dynamic == "hw":
            axes["input"] = {0: "N", 2: "H", 3: "W"}
        names = {} if getattr(model, "default_names", False) else {"input_names": ["input"], "output_names": ["logits"]}
        extra = {"export_modules_as_functions": True} if dynamic == "fn" else {}
        if dynamic == "fnblock":
            extra = {"export_modules_as_functions": {Block}}
        try:
            torch.onnx.export(model, x, path, opset_version=opset, dynamic_axes=axes, do_constant_folding=fold, **extra,
                              training=torch.onnx.TrainingMode.EVAL, **names)
        except torch.onnx.errors.CheckerError:
            if not getattr(model, "check_fails", False):
                raise  # else the file torch wrote is the fixture (its checker refuses what torch writes)
        with torch.no_grad():
            y = model(x)
        ref = {"opset": opset, "input_shape": list(x.shape), "input": x.flatten().tolist(),
               "output_shape": list(y.shape), "output": y.flatten().tolist(), "head": head_of(name, model)}
        if dynamic == "hw" and not isinstance(model, SeqView):
            x2 = torch.randn(3, chw[0], *HW_SECOND)
            with torch.no_grad():
                y2 = model(x2)
            ref.update({"input2_shape": list(x2.shape), "input2": x2.flatten().tolist(), "output2": y2.flatten().tolist()})
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(ref, f)
        print(name, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
