#!/usr/bin/python3
"""Writes 050_channel_max*.json in the golden format of tests/golden.h ({"op", "params",
"inputs", "outputs"}), from PyTorch 1.13's torch.max(x, dim=1, keepdim=True) values, the channel
maximum CBAM's spatial attention pools (Woo et al. 2018):

- 050_channel_max.json: x (3, 5, 4, 6) random;
- 050_channel_max_ties.json: x (2, 4, 3, 3) on a coarse grid (many ties: the gradient goes to the
  index torch.max returns).

Each holds y and grad_x for a random grad_y. tst_layers_golden goldenChannelMax compares
QuantScope's ChannelMax with them.

Usage: /usr/bin/python3 tests/data/make_050_channel_max.py [OUT_DIR]
"""
import json
import os
import sys

import torch

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def exact(t):
    return torch.tensor([float("%.9g" % v) for v in t.detach().flatten().tolist()]).view(t.shape)


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def case(name, seed, shape, coarse=False):
    torch.manual_seed(seed)
    x = torch.randn(shape) * 2
    if coarse:
        x = torch.round(x)
    x = exact(x).requires_grad_(True)
    y, _ = torch.max(x, dim=1, keepdim=True)
    grad_y = exact(torch.rand(y.shape) * 4 - 2)
    (grad_x,) = torch.autograd.grad(y, [x], grad_y)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump({"op": "channel_max", "params": {}, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                   "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}}, f)
    print(path)


def main():
    case("050_channel_max.json", 50, (3, 5, 4, 6))
    case("050_channel_max_ties.json", 501, (2, 4, 3, 3), coarse=True)


if __name__ == "__main__":
    main()
