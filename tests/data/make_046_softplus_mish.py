#!/usr/bin/python3
"""Writes 046_softplus.json and 046_mish.json: PyTorch's nn.Softplus() (beta 1, threshold 20, the
form ONNX's Softplus operator computes) and nn.Mish() (x tanh(softplus(x)), Misra 2019) forward and
backward, in the golden format of tests/golden.h ({"op", "params", "inputs": {"x", "grad_y"},
"outputs": {"y", "grad_x"}}). x holds Softplus's threshold 20 and a float ulp either side of it,
0, small and large magnitudes (+-30, +-90, where exp overflows a float for Mish's naive form) and
300 values uniform in [-6, 6]; grad_y is uniform in [-2, 2]. tst_layers_golden goldenPointwise
compares QuantScope's layers (nn/pointwise.h) with them.

Usage: /usr/bin/python3 tests/data/make_046_softplus_mish.py [OUT_DIR]
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


def main():
    t = np.float32(20.0)
    special = [float(t), float(np.nextafter(t, np.float32(0))), float(np.nextafter(t, np.float32(100))),
               0.0, -0.0, 1e-6, -1e-6, 30.0, -30.0, 90.0, -90.0, 15.0, -15.0]
    for name, module, seed in (("softplus", nn.Softplus(), 461), ("mish", nn.Mish(), 462)):
        torch.manual_seed(seed)
        x = torch.cat([torch.tensor(special, dtype=torch.float32), torch.rand(300) * 12 - 6]).requires_grad_(True)
        grad_y = torch.rand(x.shape) * 4 - 2
        y = module(x)
        (grad_x,) = torch.autograd.grad(y, x, grad_y)
        case = {"op": name, "params": {}, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}}
        path = os.path.join(OUT, "046_%s.json" % name)
        with open(path, "w") as f:
            json.dump(case, f)
        print(path)


if __name__ == "__main__":
    main()
