"""Modules of make_fixtures.py kept apart to keep that script short: models whose input is uint8
pixels (the bytes_* cases, tst_onnx_import_input), as an export of a forward that starts with
x.float() writes them: a uint8 graph input and a Cast to float32."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BytesInput(nn.Module):
    """uint8 pixels in; then ToTensor's / 255 and a normalisation ("div"), per-channel ImageNet
    statistics on 3 channels ("norm"), or the raw 0..255 values straight into the conv ("raw").
    OpenCV's [N, H, W, 3] arrays permuted before the Cast ("nhwc": x.permute(0, 3, 1, 2).float())
    or after it ("nhwcfloat"), and [N, H, W] grayscale bytes given their channel axis before it
    ("grayunsq": x.unsqueeze(1).float(), "grayview": x.view(-1, 1, 8, 8).float()) (tester 20)."""

    uint8_input = True

    def __init__(self, mode="div"):
        super().__init__()
        self.mode = mode
        c = 3 if mode in ("norm", "nhwc", "nhwcfloat") else 1
        self.conv = nn.Conv2d(c, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if mode == "raw":
            with torch.no_grad():
                self.conv.weight.mul_(1.0 / 128.0)

    def forward(self, x):
        if self.mode == "nhwc":
            x = x.permute(0, 3, 1, 2).float()
        elif self.mode == "nhwcfloat":
            x = x.float().permute(0, 3, 1, 2)
        elif self.mode == "grayunsq":
            x = x.unsqueeze(1).float()
        elif self.mode == "grayview":
            x = x.view(-1, 1, 8, 8).float()
        else:
            x = x.float()
        if self.mode in ("div", "grayunsq", "grayview"):
            x = (x / 255.0 - 0.2860) / 0.3530
        elif self.mode in ("norm", "nhwc", "nhwcfloat"):
            x = (x / 255.0 - self.mean) / self.std
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class BgrNormalise(nn.Module):
    """RGB swapped to BGR (x[:, [2, 1, 0]], a Gather) and then normalised with BGR-ordered
    statistics, as models ported from Caffe or OpenCV write it (tester 15). "unit": (x - m) / s on
    [0, 1] pixels; "caffe": 0..255 pixels minus Caffe's BGR means, divided by 64; "flip": the swap
    written torch.flip(x, [1]) (a Slice of step -1), then as "unit". The normalisation
    after the permutation is the input's, in the input's channel order."""

    def __init__(self, mode="unit"):
        super().__init__()
        self.mode = mode
        self.pixels255 = mode == "caffe"
        if mode == "caffe":
            self.register_buffer("mean", torch.tensor([103.94, 116.78, 123.68]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([64.0, 64.0, 64.0]).view(1, 3, 1, 1))
        else:
            self.register_buffer("mean", torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.225, 0.224, 0.229]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        swapped = torch.flip(x, [1]) if self.mode == "flip" else x[:, [2, 1, 0]]
        x = (swapped - self.mean) / self.std
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class GrayCopiesNormalise(nn.Module):
    """Grayscale images copied to three channels and then normalised with ImageNet's per-channel
    statistics (tester 15): x.repeat(1, 3, 1, 1), x.expand(-1, 3, -1, -1) or torch.cat([x] * 3, 1).
    The copies differ after the normalisation, so it stays in the graph, which takes [0, 1]
    pixels as they are."""

    def __init__(self, copies="repeat"):
        super().__init__()
        self.copies = copies
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        if self.copies == "repeat":
            x = x.repeat(1, 3, 1, 1)
        elif self.copies == "expand":
            x = x.expand(-1, 3, -1, -1)
        else:
            x = torch.cat([x, x, x], 1)
        x = (x - self.mean) / self.std
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class InvertInput(nn.Module):
    """Inverted pixels (1 - x, white digits on black made black on white; "neg": -x), then a
    normalisation ((x - 0.5) / 0.25): no (x - m) / s of the input, so the graph keeps it and takes
    [0, 1] pixels as they are (tester 15: refused)."""

    def __init__(self, mode="invert"):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = -x if self.mode == "neg" else 1 - x
        x = (x - 0.5) / 0.25
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))
