"""CBAM-style modules for make_fixtures.py (Woo et al. 2018, "CBAM: Convolutional Block Attention
Module"): the spatial attention pools each pixel's channels (mean and maximum), convolves the two
maps into a [N, 1, H, W] gate and multiplies the maps by it, written as the two common code bases
write it."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SpatialGateKeepdim(nn.Module):
    """torch.mean / torch.max over dim 1 with keepdim=True, concatenated mean first."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        avg = torch.mean(x, dim=1, keepdim=True)
        mx, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([avg, mx], dim=1))) * x


class SpatialGatePool(nn.Module):
    """The CBAM repository's ChannelPool (max first, keepdim=False and unsqueeze(1)), a
    BatchNorm'd 7x7 conv, and the gate on the right of the product."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAMNet(nn.Module):
    """Two conv stages, each with a channel gate (avg- and max-pooled MLP) and a spatial gate, then
    global average pooling and the classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 8, 1, bias=False))
        self.sa1 = SpatialGateKeepdim()
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.sa2 = SpatialGatePool()
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        ca = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        x = self.sa1(x * ca)
        x = self.sa2(F.relu(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
