#!/usr/bin/python3
"""Writes 048_selu.json, 048_celu_default.json, 048_celu_0.5.json and 048_softsign.json: PyTorch's
nn.SELU() (Klambauer et al. 2017, the constants ONNX Selu takes by default), nn.CELU(alpha)
(Barron 2017; alpha 1 and 0.5) and nn.Softsign() (x / (1 + |x|)) forward and backward, in the
golden format of tests/golden.h ({"op", "params", "inputs": {"x", "grad_y"}, "outputs": {"y",
"grad_x"}}). x holds 0, +-1 ulp of 0, small and large magnitudes (+-30, +-90, where exp underflows
a float) and 300 values uniform in [-6, 6]; grad_y is uniform in [-2, 2]. tst_layers_golden
goldenPointwise compares QuantScope's layers (nn/pointwise.h) with them.

Usage: /usr/bin/python3 tests/data/make_048_selu_celu_softsign.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn as nn

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def main():
    special = [0.0, -0.0, 1e-45, -1e-45, 1e-6, -1e-6, 0.5, -0.5, 30.0, -30.0, 90.0, -90.0, 15.0, -15.0]
    cases = (("selu", "048_selu", nn.SELU(), {}, 481),
             ("celu", "048_celu_default", nn.CELU(), {}, 482),
             ("celu", "048_celu_0.5", nn.CELU(alpha=0.5), {"alpha": 0.5}, 483),
             ("softsign", "048_softsign", nn.Softsign(), {}, 484))
    for op, name, module, params, seed in cases:
        torch.manual_seed(seed)
        x = torch.cat([torch.tensor(special, dtype=torch.float32), torch.rand(300) * 12 - 6]).requires_grad_(True)
        grad_y = torch.rand(x.shape) * 4 - 2
        y = module(x)
        (grad_x,) = torch.autograd.grad(y, x, grad_y)
        case = {"op": op, "params": params, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}}
        path = os.path.join(OUT, name + ".json")
        with open(path, "w") as f:
            json.dump(case, f)
        print(path)


if __name__ == "__main__":
    main()
