#!/usr/bin/python3
"""Writes 041_hardtanh.json: PyTorch's nn.Hardtanh(min_val=-0.5, max_val=2.0) (what torch.clamp and
ONNX Clip compute; QuantScope's Hardtanh layer, nn/pointwise.h) forward and backward, in the golden
format of tests/golden.h ({"op", "params", "inputs": {"x", "grad_y"}, "outputs": {"y", "grad_x"}}).
x holds both bounds exactly, a float ulp either side of each, 0, large magnitudes and 300 values
uniform in [-4, 4]; grad_y is uniform in [-2, 2]. hardtanh_backward passes the gradient strictly
inside the bounds only, so the values at the bounds check that edge. tst_layers_golden
goldenPointwise compares QuantScope's layer with them.

Usage: /usr/bin/python3 tests/data/make_041_hardtanh.py [OUT_DIR]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
MIN_VAL, MAX_VAL = -0.5, 2.0


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def main():
    special = []
    for b in (MIN_VAL, MAX_VAL):
        f = np.float32(b)
        special += [float(f), float(np.nextafter(f, np.float32(-10))), float(np.nextafter(f, np.float32(10)))]
    special += [0.0, -0.0, 20.0, -20.0, 1e-6, -1e-6]
    torch.manual_seed(41)
    x = torch.cat([torch.tensor(special, dtype=torch.float32), torch.rand(300) * 8 - 4]).requires_grad_(True)
    grad_y = torch.rand(x.shape) * 4 - 2
    y = nn.Hardtanh(MIN_VAL, MAX_VAL)(x)
    (grad_x,) = torch.autograd.grad(y, x, grad_y)
    case = {"op": "hardtanh", "params": {"min_val": MIN_VAL, "max_val": MAX_VAL},
            "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)}, "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}}
    path = os.path.join(OUT, "041_hardtanh.json")
    with open(path, "w") as f:
        json.dump(case, f)
    print(path)


if __name__ == "__main__":
    main()
