#!/usr/bin/python3
"""Writes 045_group_norm*.json in the golden format of tests/golden.h ({"op", "params",
"inputs", "outputs"}), from PyTorch 1.13's nn.GroupNorm (Wu & He 2018):

- 045_group_norm.json: GroupNorm(2, 6) on x (3, 6, 5, 4), weight and bias drawn away from 1 and 0;
- 045_group_norm_instance.json: GroupNorm(4, 4), which is nn.InstanceNorm2d(4, affine=True);
- 045_group_norm_one_noaffine.json: GroupNorm(1, 4, affine=False), eps 1e-3, x offset by 3 so
  that the mean matters;
- 045_group_norm_features.json: GroupNorm(2, 6) on (5, 6) features.

Each holds y, grad_x and (with affine parameters) grad_w and grad_b for a random grad_y.
tst_layers_golden goldenGroupNorm compares QuantScope's GroupNorm with them.

Usage: /usr/bin/python3 tests/data/make_045_group_norm.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn as nn

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def exact(t):
    """t rounded to what the JSON keeps, so both sides start from the same floats."""
    return torch.tensor([float("%.9g" % v) for v in t.detach().flatten().tolist()]).view(t.shape)


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def case(name, seed, groups, channels, shape, affine=True, eps=1e-5, offset=0.0):
    torch.manual_seed(seed)
    mod = nn.GroupNorm(groups, channels, eps=eps, affine=affine)
    inputs = {}
    params = []
    if affine:
        with torch.no_grad():
            mod.weight.copy_(exact(torch.rand(channels) + 0.5))
            mod.bias.copy_(exact(torch.rand(channels) - 0.5))
        inputs = {"w": tensor(mod.weight), "b": tensor(mod.bias)}
        params = [mod.weight, mod.bias]
    x = exact(torch.randn(shape) * 2 + offset).requires_grad_(True)
    grad_y = exact(torch.rand(shape) * 4 - 2)
    y = mod(x)
    grads = torch.autograd.grad(y, [x] + params, grad_y)
    outputs = {"y": tensor(y), "grad_x": tensor(grads[0])}
    if affine:
        outputs.update({"grad_w": tensor(grads[1]), "grad_b": tensor(grads[2])})
    inputs.update({"x": tensor(x), "grad_y": tensor(grad_y)})
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump({"op": "group_norm", "params": {"num_groups": groups, "num_channels": channels, "eps": eps, "affine": affine},
                   "inputs": inputs, "outputs": outputs}, f)
    print(path)


def main():
    case("045_group_norm.json", 45, 2, 6, (3, 6, 5, 4))
    case("045_group_norm_instance.json", 451, 4, 4, (2, 4, 6, 6))
    case("045_group_norm_one_noaffine.json", 452, 1, 4, (2, 4, 5, 5), affine=False, eps=1e-3, offset=3.0)
    case("045_group_norm_features.json", 453, 2, 6, (5, 6))


if __name__ == "__main__":
    main()
