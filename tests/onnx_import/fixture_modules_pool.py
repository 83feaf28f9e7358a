"""Modules of make_fixtures.py kept apart to keep that script short: pooling windows that are not
square (the poolgeom_* cases, tst_pool_geometry)."""
import torch.nn as nn
import torch.nn.functional as F


class MaxPoolGeometry(nn.Module):
    """Max pooling windows that are not square: ceil_mode on an odd map, ResNet's 3x3 stride-2
    pad-1 stem pool with ceil_mode (one more column than floor), a (2, 1) kernel, a (3, 2) kernel
    with stride (2, 1) and padding (1, 0) in ceil mode, and a global max pool
    (nn.AdaptiveMaxPool2d(1)) of a non-square 2 x 3 map."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.p1 = nn.MaxPool2d(2, ceil_mode=True)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.p2 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.p3 = nn.MaxPool2d((2, 1))
        self.c3 = nn.Conv2d(6, 8, 3, padding=1)
        self.p4 = nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True)
        self.gmax = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.p1(F.relu(self.stem(x)))  # 13 x 11 -> 7 x 6
        x = self.p2(F.relu(self.c2(x)))    # 4 x 4 (floor: 4 x 3)
        x = self.p3(x)                     # 2 x 4
        x = self.p4(F.relu(self.c3(x)))    # 2 x 3
        return self.fc(self.gmax(x).flatten(1))


class MaxOverMap(nn.Module):
    """A global max over a non-square 5 x 4 map written as x.amax((2, 3)) (ReduceMax over H and W),
    or with two_step as x.max(-1)[0].max(-1)[0] (two ReduceMax nodes, W then H)."""

    def __init__(self, two_step=False):
        super().__init__()
        self.two_step = two_step
        self.conv = nn.Conv2d(3, 6, 3, stride=(1, 2))
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))  # 7 x 10 -> 5 x 4
        m = x.max(-1)[0].max(-1)[0] if self.two_step else x.amax((2, 3))
        return self.fc(m)


class AvgPoolGeometry(nn.Module):
    """Average pooling windows that are not square: ceil_mode on an odd map (the last windows run
    past the input), ResNet-style 3x3 stride 2 pad 1 with ceil_mode and count_include_pad=True (a
    zero Pad in the export), a (3, 2) kernel with stride (2, 1), padding (1, 0), ceil_mode and
    count_include_pad=False (the pads on the AveragePool, count_include_pad 0), and a (2, 1) kernel."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.a1 = nn.AvgPool2d(2, ceil_mode=True)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.a2 = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.c3 = nn.Conv2d(6, 8, 3, padding=1)
        self.a3 = nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True, count_include_pad=False)
        self.a4 = nn.AvgPool2d((2, 1))
        self.fc = nn.Linear(8 * 1 * 3, 10)

    def forward(self, x):
        x = self.a1(F.relu(self.stem(x)))  # 13 x 11 -> 7 x 6
        x = self.a2(F.relu(self.c2(x)))    # 4 x 4 (floor: 4 x 3)
        x = self.a3(F.relu(self.c3(x)))    # 3 x 3
        x = self.a4(x)                     # 1 x 3
        return self.fc(x.flatten(1))


class AvgCeilPadded(nn.Module):
    """nn.AvgPool2d(2, 2, padding=1, ceil_mode=True) (count_include_pad=True) on a 7 x 9 map, which
    torch.onnx.export writes as a zero Pad and an AveragePool with ceil_mode: by ONNX's rule a 5 x 6
    output (the last windows start in the Pad's zeros), by PyTorch's a 4 x 5 one. The Linear after
    it takes 4 x 5 maps, so only PyTorch's reading fits the graph; with global_head a global average
    pool follows instead, which fits both (the importer refuses that one)."""

    def __init__(self, global_head=False):
        super().__init__()
        self.global_head = global_head
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2, 2, padding=1, ceil_mode=True)
        self.fc = nn.Linear(6 if global_head else 6 * 4 * 5, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))  # 7 x 9 -> 4 x 5 (ONNX: 5 x 6)
        return self.fc(x.mean((2, 3)) if self.global_head else x.flatten(1))
