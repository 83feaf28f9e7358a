#!/usr/bin/python3
"""Writes 049_layer_norm2d*.json in the golden format of tests/golden.h ({"op", "params",
"inputs", "outputs"}), from PyTorch 1.13's F.layer_norm over the channels of each pixel, as
torchvision's models.convnext.LayerNorm2d and timm's LayerNorm2d compute it (x.permute(0, 2, 3, 1),
F.layer_norm over the last axis, permuted back; Liu et al. 2022, ConvNeXt):

- 049_layer_norm2d.json: 6 channels on x (3, 6, 5, 4), eps 1e-6 (ConvNeXt's), weight and bias drawn
  away from 1 and 0;
- 049_layer_norm2d_noaffine.json: 4 channels without affine parameters, eps 1e-3, x offset by 3 so
  that the mean matters;
- 049_layer_norm2d_features.json: 6 channels on (5, 6) features, which is nn.LayerNorm(6).

Each holds y, grad_x and (with affine parameters) grad_w and grad_b for a random grad_y.
tst_layers_golden goldenLayerNorm2d compares QuantScope's LayerNorm2d with them.

Usage: /usr/bin/python3 tests/data/make_049_layer_norm2d.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def exact(t):
    """t rounded to what the JSON keeps, so both sides start from the same floats."""
    return torch.tensor([float("%.9g" % v) for v in t.detach().flatten().tolist()]).view(t.shape)


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def layer_norm2d(x, channels, weight, bias, eps):
    if x.dim() == 2:
        return F.layer_norm(x, (channels,), weight, bias, eps)
    return F.layer_norm(x.permute(0, 2, 3, 1), (channels,), weight, bias, eps).permute(0, 3, 1, 2)


def case(name, seed, channels, shape, affine=True, eps=1e-6, offset=0.0):
    torch.manual_seed(seed)
    inputs = {}
    params = []
    weight = bias = None
    if affine:
        weight = exact(torch.rand(channels) + 0.5).requires_grad_(True)
        bias = exact(torch.rand(channels) - 0.5).requires_grad_(True)
        inputs = {"w": tensor(weight), "b": tensor(bias)}
        params = [weight, bias]
    x = exact(torch.randn(shape) * 2 + offset).requires_grad_(True)
    grad_y = exact(torch.rand(shape) * 4 - 2)
    y = layer_norm2d(x, channels, weight, bias, eps)
    grads = torch.autograd.grad(y, [x] + params, grad_y)
    outputs = {"y": tensor(y), "grad_x": tensor(grads[0])}
    if affine:
        outputs.update({"grad_w": tensor(grads[1]), "grad_b": tensor(grads[2])})
    inputs.update({"x": tensor(x), "grad_y": tensor(grad_y)})
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump({"op": "layer_norm2d", "params": {"num_channels": channels, "eps": eps, "affine": affine},
                   "inputs": inputs, "outputs": outputs}, f)
    print(path)


def main():
    case("049_layer_norm2d.json", 49, 6, (3, 6, 5, 4))
    case("049_layer_norm2d_noaffine.json", 491, 4, (2, 4, 3, 3), affine=False, eps=1e-3, offset=3.0)
    case("049_layer_norm2d_features.json", 492, 6, (5, 6))


if __name__ == "__main__":
    main()
