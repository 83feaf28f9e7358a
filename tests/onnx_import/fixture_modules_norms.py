"""ConvNeXt-style modules for make_fixtures.py (Liu et al. 2022, "A ConvNet for the 2020s"): a
LayerNorm over the channels of each pixel, written the three ways PyTorch code writes it, and the
channels-last block around it. QuantScope reads each as its LayerNorm2d layer."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2dPermute(nn.Module):
    """torchvision's models.convnext.LayerNorm2d and timm's LayerNorm2d: permute to channels-last,
    F.layer_norm over the last axis, permute back."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.ln = nn.LayerNorm(c, eps=eps)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerNormChannelsFirst(nn.Module):
    """The ConvNeXt repository's LayerNorm(data_format="channels_first"), by hand over axis 1."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class CNBlockTV(nn.Module):
    """torchvision's CNBlock: depthwise 7x7, permute, LayerNorm(C, eps 1e-6), Linear(C, 4C), GELU,
    Linear(4C, C), permute back, layer_scale (C, 1, 1) times that, plus the input."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.rand(c, 1, 1) + 0.25)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class CNBlockCL(nn.Module):
    """The ConvNeXt repository's Block: the same MLP with gamma ([C], on the channels-last maps)
    before the permute back."""

    def __init__(self, c):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.25)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def _randomise_norms(module):
    for m in module.modules():
        if isinstance(m, nn.LayerNorm) or isinstance(m, LayerNormChannelsFirst):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


class ConvNeXtTV(nn.Module):
    """torchvision's ConvNeXt in small: a 2x2 stride-2 stem and LayerNorm2d, a CNBlock, the
    downsampling LayerNorm2d and 2x2 stride-2 conv, a CNBlock, global average pooling, a
    LayerNorm2d on the pooled [C, 1, 1] map, flatten, the classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNorm2dPermute(8))
        self.stage1 = CNBlockTV(8)
        self.down = nn.Sequential(LayerNorm2dPermute(8), nn.Conv2d(8, 16, 2, stride=2))
        self.stage2 = CNBlockTV(16)
        self.head_norm = LayerNorm2dPermute(16)
        self.fc = nn.Linear(16, 10)
        _randomise_norms(self)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        x = self.head_norm(F.adaptive_avg_pool2d(x, 1))
        return self.fc(torch.flatten(x, 1))


class ConvNeXtCF(nn.Module):
    """The ConvNeXt repository's model in small: the channels_first LayerNorm by hand after the stem
    and in the downsampling layer, channels-last Blocks with gamma, then x.mean([-2, -1]),
    nn.LayerNorm(C) on the features and the classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNormChannelsFirst(8))
        self.stage1 = CNBlockCL(8)
        self.down = nn.Sequential(LayerNormChannelsFirst(8), nn.Conv2d(8, 16, 2, stride=2))
        self.stage2 = CNBlockCL(16)
        self.norm = nn.LayerNorm(16, eps=1e-6)
        self.head = nn.Linear(16, 10)
        _randomise_norms(self)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


class LayerNormNoAffine(nn.Module):
    """nn.LayerNorm(C, elementwise_affine=False) on channels-last maps and nn.LayerNorm(F,
    elementwise_affine=False) on the flattened features. torch 1.13 writes both at opset 17 as
    LayerNormalization without Scale and B, which ONNX's checker refuses after the file is written
    (check_fails)."""

    check_fails = True

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.ln = nn.LayerNorm(6, elementwise_affine=False)
        self.head_norm = nn.LayerNorm(6 * 4 * 4, elementwise_affine=False)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        x = self.ln(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(self.head_norm(F.gelu(x).flatten(1)))


class LayerNormRsqrt(nn.Module):
    """The channels_first LayerNorm by hand as (x - u) * torch.rsqrt(var + eps) (exported as
    1 / Sqrt and a Mul), with the variance as d * d; on a map, then a flatten into the classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.weight = nn.Parameter(torch.rand(6) + 0.5)
        self.bias = nn.Parameter(torch.rand(6) - 0.5)
        self.fc = nn.Linear(6 * 5 * 5, 10)

    def forward(self, x):
        x = self.conv(x)
        d = x - x.mean(1, keepdim=True)
        x = d * torch.rsqrt((d * d).mean(1, keepdim=True) + 1e-6)
        x = self.weight[:, None, None] * x + self.bias[:, None, None]
        return self.fc(F.relu(x).flatten(1))


class LayerNormVar(LayerNormRsqrt):
    """The channels_first LayerNorm with x.var(1, unbiased=False, keepdim=True) (a mean and a
    difference of its own) and / torch.sqrt, then a flatten into the classifier."""

    def forward(self, x):
        x = self.conv(x)
        x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
        x = self.weight[:, None, None] * x + self.bias[:, None, None]
        return self.fc(F.relu(x).flatten(1))


class KerasMatMulHead(nn.Module):
    """A Keras-style head: maps permuted to channels-last, flattened, then x @ W (a MatMul, not a
    Gemm) and a bias: the Linear reads the channels-last order, and its output is plain features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.w = nn.Parameter(torch.randn(5 * 4 * 3, 10) * 0.1)
        self.b = nn.Parameter(torch.randn(10) * 0.1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return x @ self.w + self.b
