"""Modules of make_fixtures.py kept apart to keep that script short: pointwise activations,
PReLU, GELU's tanh approximation, squeeze-and-excitation gates and channel concatenation
(tst_activations, tst_prelu, tst_mul_concat)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ActNet(nn.Module):
    """conv -> activation -> max pool -> conv -> activation -> flatten -> linear, for one
    pointwise activation (nn/pointwise.h). The convolutions' weights are scaled up so the
    activations see values on both sides of their bends (Hardswish's at -3 and 3, say)."""

    def __init__(self, act):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.act1 = act()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.act2 = act()
        self.fc = nn.Linear(6 * 4 * 4, 10)
        with torch.no_grad():
            self.conv1.weight.mul_(4.0)
            self.conv2.weight.mul_(3.0)

    def forward(self, x):
        x = F.max_pool2d(self.act1(self.conv1(x)), 2)
        return self.fc(self.act2(self.conv2(x)).flatten(1))


class SigmoidTimesX(nn.Module):
    """SiLU written as torch.sigmoid(x) * x: Mul(s, x), the other input order."""

    def forward(self, x):
        return torch.sigmoid(x) * x


class GeluHalfFirst(nn.Module):
    """The erf GELU written by hand in another order: x * 0.5 * (1 + erf(x / sqrt(2)))."""

    def forward(self, x):
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def act_net(act):
    return lambda: ActNet(act)


class PReluNet(nn.Module):
    """conv -> PReLU(6) -> max pool -> conv -> PReLU() -> flatten -> linear -> PReLU(16) -> linear:
    a slope per channel of a map, one shared slope, a slope per feature. The slopes are drawn
    (PyTorch starts them all at 0.25), some negative."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.act1 = nn.PReLU(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.act2 = nn.PReLU()
        self.fc1 = nn.Linear(6 * 4 * 4, 16)
        self.act3 = nn.PReLU(16)
        self.fc2 = nn.Linear(16, 10)
        with torch.no_grad():
            for a in (self.act1, self.act2, self.act3):
                a.weight.uniform_(-0.3, 0.6)

    def forward(self, x):
        x = F.max_pool2d(self.act1(self.conv1(x)), 2)
        x = self.act2(self.conv2(x)).flatten(1)
        return self.fc2(self.act3(self.fc1(x)))


class GeluTanhByHand(nn.Module):
    """GELU's tanh approximation written by hand: x ** 3 (a Pow), 0.5 * x first; `kappa` other than
    0.044715 makes a malformed variant (refused by node)."""

    def __init__(self, kappa=0.044715):
        super().__init__()
        self.kappa = kappa

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + self.kappa * torch.pow(x, 3))))


class SEConv(nn.Module):
    """Squeeze-and-excitation as torchvision's SqueezeExcitation writes it: AdaptiveAvgPool2d(1),
    1x1 conv, ReLU, 1x1 conv, a Sigmoid or Hardsigmoid gate, and the gate times the map (Mul of
    [N, C, H, W] and [N, C, 1, 1]); gate_first writes scale * x (MobileNetV3's order)."""

    def __init__(self, gate=nn.Sigmoid, gate_first=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.gate = gate()
        self.gate_first = gate_first
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        with torch.no_grad():
            self.fc2.weight.mul_(3.0)  # gates across the sigmoid's range, not all near 0.5

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        s = self.gate(self.fc2(F.relu(self.fc1(self.pool(x)))))
        x = s * x if self.gate_first else x * s
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class SELinearView(nn.Module):
    """The classic SENet block: avg_pool(x).view(b, c), Linear, ReLU, Linear, Sigmoid,
    .view(b, c, 1, 1), and x * y.expand_as(x)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.se = nn.Sequential(nn.Linear(8, 4, bias=False), nn.ReLU(inplace=True), nn.Linear(4, 8, bias=False), nn.Sigmoid())
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        with torch.no_grad():
            self.se[2].weight.mul_(3.0)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        b, c, _, _ = x.size()
        y = self.pool(x).view(b, c)
        y = self.se(y).view(b, c, 1, 1)
        x = x * y.expand_as(x)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class SELinearFlat(nn.Module):
    """A gate from x.mean((2, 3)), Linear layers with biases and a Hardsigmoid, put back with
    [:, :, None, None]: s * x."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 4)
        self.fc2 = nn.Linear(4, 8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        with torch.no_grad():
            self.fc2.weight.mul_(4.0)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        x = s[:, :, None, None] * x
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class GateMul(nn.Module):
    """x * sigmoid(y) with y another branch (a GLU-like gate of equal shapes): Sigmoid + Mul, not SiLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.convx = nn.Conv2d(6, 6, 3, padding=1)
        self.convy = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        with torch.no_grad():
            self.convy.weight.mul_(3.0)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.convx(x) * torch.sigmoid(self.convy(x))
        return self.fc(F.max_pool2d(x, 2).flatten(1))


class DenseBlock(nn.Module):
    """A DenseNet-style block: each layer's output concatenated to its input (torch.cat([x, y], 1)),
    then a 1x1 transition, pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(7, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.trans = nn.Conv2d(10, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = torch.cat([x, F.relu(self.bn1(self.conv1(x)))], 1)
        x = torch.cat([x, F.relu(self.bn2(self.conv2(x)))], 1)
        x = F.avg_pool2d(F.relu(self.trans(x)), 2)
        return self.fc(x.flatten(1))


class Inception(nn.Module):
    """An Inception-style module: 1x1, 3x3 and pool -> 1x1 branches joined by torch.cat along the
    channels (dim=-3 when neg_dim), then global pooling and a classifier."""

    def __init__(self, neg_dim=False):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.b1 = nn.Conv2d(6, 4, 1)
        self.b2 = nn.Conv2d(6, 5, 3, padding=1)
        self.b3 = nn.Conv2d(6, 3, 1)
        self.conv = nn.Conv2d(12, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)
        self.neg_dim = neg_dim

    def forward(self, x):
        x = F.relu(self.stem(x))
        b3 = self.b3(F.max_pool2d(x, 3, 1, 1))
        x = torch.cat([F.relu(self.b1(x)), F.relu(self.b2(x)), F.relu(b3)], -3 if self.neg_dim else 1)
        x = F.relu(self.conv(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# name, module, input [C, H, W] (or [features] for a flat input), opset, do_constant_folding, dynamic batch


class Clamp(nn.Module):
    """torch.clamp(x, min, max) with either bound left out (None): Clip with one bound, the other
    input empty or absent."""

    def __init__(self, lo, hi):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return torch.clamp(x, min=self.lo, max=self.hi)


class HardByHand(nn.Module):
    """Hardswish and Hardsigmoid as much MobileNetV3 code writes them, with F.relu6 (Relu, then
    Clip(max=6)) or a clamp to [0, 6]: x * relu6(x + 3) / 6, x * (relu6(x + 3) / 6) and
    relu6(x + 3) * (1 / 6)."""

    def __init__(self, form):
        super().__init__()
        self.form = form

    def forward(self, x):
        if self.form == "swish":
            return x * F.relu6(x + 3) / 6
        if self.form == "swish_inner":
            return x * (torch.clamp(x + 3.0, 0.0, 6.0) / 6.0)
        if self.form == "sigmoid_mul":
            return F.relu6(x + 3.0) * (1.0 / 6.0)
        return F.hardtanh(x + 3, 0.0, 6.0) / 6  # "sigmoid"
