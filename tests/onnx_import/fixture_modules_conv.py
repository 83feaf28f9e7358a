"""Modules of make_fixtures.py kept apart to keep that script short: convolutions whose windows
are not square (the convgeom_* cases, tst_conv_geometry)."""
import torch.nn as nn
import torch.nn.functional as F


class ConvGeometry(nn.Module):
    """Convolution windows that are not square: Inception's 1x7 and 7x1 factorised kernels, a
    stride of (2, 1), dilation 2 (atrous), what padding='same' does with an even kernel (one more
    pad at the bottom and right; torch 1.13 cannot export the string, so F.pad spells it out, a
    Pad node the importer folds into the conv), another asymmetric F.pad before a strided conv, a
    grouped dilated conv and a depthwise dilated strided one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.k1x7 = nn.Conv2d(8, 8, (1, 7), padding=(0, 3))
        self.k7x1 = nn.Conv2d(8, 8, (7, 1), padding=(3, 0))
        self.s2x1 = nn.Conv2d(8, 8, 3, stride=(2, 1), padding=1)
        self.dil = nn.Conv2d(8, 8, 3, dilation=2, padding=2)
        self.same4 = nn.Conv2d(8, 8, 4)  # padding="same": pads top 1, left 1, bottom 2, right 2
        self.fpad = nn.Conv2d(8, 6, (3, 2), stride=(1, 2))
        self.gdil = nn.Conv2d(6, 6, 3, groups=2, dilation=(2, 1), padding=(2, 1))
        self.dwdil = nn.Conv2d(6, 6, 3, groups=6, dilation=2, padding=2, stride=2, bias=False)
        self.fc = nn.Linear(6 * 4 * 3, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))           # 12 x 11
        x = F.relu(self.k1x7(x))
        x = F.relu(self.k7x1(x))
        x = F.relu(self.s2x1(x))           # 6 x 11
        x = F.relu(self.dil(x))
        x = F.relu(self.same4(F.pad(x, (1, 2, 1, 2))))
        x = F.relu(self.fpad(F.pad(x, (1, 2, 0, 1))))  # left 1, right 2, top 0, bottom 1: 5 x 7
        x = F.relu(self.gdil(x))
        x = F.relu(self.dwdil(x))          # 3 x 4
        return self.fc(x.flatten(1))
