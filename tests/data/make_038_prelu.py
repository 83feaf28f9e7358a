#!/usr/bin/python3
"""Writes 038_prelu*.json and 039_gelu_tanh.json in the golden format of tests/golden.h ({"op",
"params", "inputs", "outputs"}), from PyTorch 1.13:

- 038_prelu.json: nn.PReLU(num_parameters=4) on x (2, 4, 5, 5): y, grad_x and grad_w (the
  slopes' gradient), inputs x, w (the slopes, drawn in [-0.5, 1]) and grad_y;
- 038_prelu_shared.json: nn.PReLU() (one slope) on the same shape;
- 038_prelu_features.json: nn.PReLU(6) on (7, 6) features.
  x holds exact zeros and values a float ulp either side of 0 (0 takes the slope's branch);
- 039_gelu_tanh.json: nn.GELU(approximate='tanh'), x and grad_y as make_030_activations.py draws
  them (the bends of the other activations, +-20, +-90, 300 values in [-8, 8]).

tst_layers_golden goldenPReLU and goldenPointwise compare QuantScope's layers with them.

Usage: /usr/bin/python3 tests/data/make_038_prelu.py [OUT_DIR]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def write(name, case):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(case, f)
    print(path)


def prelu_case(seed, slopes, shape):
    torch.manual_seed(seed)
    mod = nn.PReLU(slopes)
    with torch.no_grad():
        mod.weight.copy_(torch.rand(slopes) * 1.5 - 0.5)
        # round the slopes to what the JSON keeps, so both sides start from the same floats
        mod.weight.copy_(torch.tensor([float("%.9g" % v) for v in mod.weight.tolist()]))
    x = torch.rand(shape) * 8 - 4
    flat = x.view(-1)
    tiny = float(np.nextafter(np.float32(0), np.float32(1)))
    flat[:6] = torch.tensor([0.0, -0.0, tiny, -tiny, 1e-6, -1e-6])
    x = torch.tensor([float("%.9g" % v) for v in flat.tolist()]).view(shape).requires_grad_(True)
    grad_y = torch.rand(shape) * 4 - 2
    grad_y = torch.tensor([float("%.9g" % v) for v in grad_y.view(-1).tolist()]).view(shape)
    y = mod(x)
    grad_x, grad_w = torch.autograd.grad(y, (x, mod.weight), grad_y)
    return {"op": "prelu", "params": {"num_parameters": slopes},
            "inputs": {"x": tensor(x), "w": tensor(mod.weight), "grad_y": tensor(grad_y)},
            "outputs": {"y": tensor(y), "grad_x": tensor(grad_x), "grad_w": tensor(grad_w)}}


def main():
    write("038_prelu.json", prelu_case(38, 4, (2, 4, 5, 5)))
    write("038_prelu_shared.json", prelu_case(381, 1, (2, 4, 5, 5)))
    write("038_prelu_features.json", prelu_case(382, 6, (7, 6)))

    special = []
    for b in (0.0, 3.0, -3.0):
        f = np.float32(b)
        special += [float(f), float(np.nextafter(f, np.float32(-10))), float(np.nextafter(f, np.float32(10)))]
    special += [-0.0, 20.0, -20.0, 90.0, -90.0, 1e-6, -1e-6, 0.5, -0.5]
    torch.manual_seed(39)
    x = torch.cat([torch.tensor(special, dtype=torch.float32), torch.rand(300) * 16 - 8]).requires_grad_(True)
    grad_y = torch.rand(x.shape) * 4 - 2
    y = nn.GELU(approximate="tanh")(x)
    (grad_x,) = torch.autograd.grad(y, x, grad_y)
    write("039_gelu_tanh.json", {"op": "gelu_tanh", "params": {"approximate": "tanh"}, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                                 "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}})


if __name__ == "__main__":
    main()
