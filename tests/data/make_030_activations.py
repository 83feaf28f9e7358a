#!/usr/bin/python3
"""Writes 030_sigmoid.json .. 037_gelu.json: PyTorch's pointwise activations (nn/pointwise.h)
forward and backward, in the golden format of tests/golden.h ({"op", "params", "inputs": {"x",
"grad_y"}, "outputs": {"y", "grad_x"}}). x holds the bends exactly (0, +-3), values a float ulp
either side of them, large magnitudes (+-20, +-90, where exp over- and underflows) and 300
values uniform in [-8, 8]; grad_y is uniform in [-2, 2]. tst_layers_golden goldenPointwise
compares QuantScope's Pointwise layer with them.

Usage: /usr/bin/python3 tests/data/make_030_activations.py [OUT_DIR]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

CASES = [  # file number, op, module, params
    (30, "sigmoid", nn.Sigmoid(), {}),
    (31, "tanh", nn.Tanh(), {}),
    (32, "silu", nn.SiLU(), {}),
    (33, "hardsigmoid", nn.Hardsigmoid(), {}),
    (34, "hardswish", nn.Hardswish(), {}),
    (35, "leaky_relu", nn.LeakyReLU(0.1), {"negative_slope": 0.1}),
    (36, "elu", nn.ELU(0.7), {"alpha": 0.7}),
    (37, "gelu", nn.GELU(), {}),
]


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def main():
    special = []
    for b in (0.0, 3.0, -3.0):
        f = np.float32(b)
        special += [float(f), float(np.nextafter(f, np.float32(-10))), float(np.nextafter(f, np.float32(10)))]
    special += [-0.0, 20.0, -20.0, 90.0, -90.0, 1e-6, -1e-6, 0.5, -0.5]
    for num, op, mod, params in CASES:
        torch.manual_seed(num)
        x = torch.cat([torch.tensor(special, dtype=torch.float32), torch.rand(300) * 16 - 8]).requires_grad_(True)
        grad_y = torch.rand(x.shape) * 4 - 2
        y = mod(x)
        (grad_x,) = torch.autograd.grad(y, x, grad_y)
        case = {"op": op, "params": params, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}}
        path = os.path.join(OUT, "%03d_%s.json" % (num, op))
        with open(path, "w") as f:
            json.dump(case, f)
        print(path)


if __name__ == "__main__":
    main()
