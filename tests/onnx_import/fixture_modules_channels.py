"""Modules of make_fixtures.py kept apart to keep that script short: ShuffleNetV2-style networks
(Ma et al. 2018), whose channel split and channel shuffle export as Slice or Split and as
Reshape, Transpose, Reshape (the shuffle_* cases, tst_channel_ops)."""
import torch
import torch.nn as nn


def conv_bn(cin, cout, k, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def shuffle(x, groups, how):
    n, c, h, w = x.shape
    if how == "view":  # torchvision's channel_shuffle
        x = x.view(n, groups, c // groups, h, w)
        return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)
    # the spatial axes flattened, a permute, then the images' shape again
    return x.reshape(n, groups, c // groups, h * w).permute(0, 2, 1, 3).reshape(n, c, h, w)


class Branch(nn.Sequential):
    def __init__(self, cin, cout, stride):
        super().__init__(conv_bn(cin, cout, 1), conv_bn(cout, cout, 3, stride, groups=cout, relu=False), conv_bn(cout, cout, 1))


class ShuffleTiny(nn.Module):
    """A stem, a stride-2 unit (two branches joined by a concatenation, then a shuffle) and two
    stride-1 units (the channels split in two, one part through a branch, joined and shuffled), a
    global mean and a Linear. split: "chunk" (x.chunk(2, 1)), "split" (x.split(sizes, 1)) or
    "index" (x[:, :k], x[:, k:]); sizes: the two parts; shuffle: "view" or "permute"."""

    def __init__(self, split="chunk", shuffle="view", sizes=(8, 8)):
        super().__init__()
        self.split, self.how, self.sizes = split, shuffle, list(sizes)
        c = sum(sizes)
        self.stem = conv_bn(1, 8, 3)
        self.left = nn.Sequential(conv_bn(8, 8, 3, 2, groups=8, relu=False), conv_bn(8, c // 2, 1))
        self.right = Branch(8, c - c // 2, 2)
        self.units = nn.ModuleList([Branch(sizes[1], sizes[1], 1) for _ in range(2)])
        self.fc = nn.Linear(c, 10)

    def parts(self, x):
        if self.split == "chunk":
            return x.chunk(2, dim=1)
        if self.split == "split":
            return x.split(self.sizes, dim=1)
        k = self.sizes[0]
        return x[:, :k], x[:, k:]

    def forward(self, x):
        x = self.stem(x)
        x = shuffle(torch.cat([self.left(x), self.right(x)], 1), 2, self.how)
        for unit in self.units:
            a, b = self.parts(x)
            x = shuffle(torch.cat([a, unit(b)], 1), 2, self.how)
        return self.fc(x.mean([2, 3]))
