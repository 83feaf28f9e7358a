"""Modules of make_fixtures.py kept apart to keep that script short: models whose input is uint8
pixels (the bytes_* cases, tst_onnx_import_input), as an export of a forward that starts with
x.float() writes them: a uint8 graph input and a Cast to float32."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BytesInput(nn.Module):
    """uint8 pixels in; then ToTensor's / 255 and a normalisation ("div"), per-channel ImageNet
    statistics on 3 channels ("norm"), or the raw 0..255 values straight into the conv ("raw")."""

    uint8_input = True

    def __init__(self, mode="div"):
        super().__init__()
        self.mode = mode
        c = 3 if mode == "norm" else 1
        self.conv = nn.Conv2d(c, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if mode == "raw":
            with torch.no_grad():
                self.conv.weight.mul_(1.0 / 128.0)

    def forward(self, x):
        x = x.float()
        if self.mode == "div":
            x = (x / 255.0 - 0.2860) / 0.3530
        elif self.mode == "norm":
            x = (x / 255.0 - self.mean) / self.std
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))
