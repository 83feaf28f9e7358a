#!/usr/bin/python3
"""Writes 047_pad_reflect.json, 047_pad_replicate.json and 047_pad_zeros.json: PyTorch's F.pad on a
[2, 3, 5, 6] map with pads (left 2, right 1, top 1, bottom 3) in modes reflect, replicate and
constant 0 (QuantScope's Pad layer, nn/pad.h), forward and backward, in the golden format of
tests/golden.h ({"op": "pad", "params": {"mode", "pads": [top, left, bottom, right]}, "inputs":
{"x", "grad_y"}, "outputs": {"y", "grad_x"}}). Reflected and replicated border values collect
several output gradients, which the backward sums. tst_layers_golden goldenPad compares.

Usage: /usr/bin/python3 tests/data/make_047_pad.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
LEFT, RIGHT, TOP, BOTTOM = 2, 1, 1, 3


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def main():
    for i, (mode, ours) in enumerate((("reflect", "reflect"), ("replicate", "replicate"), ("constant", "zeros"))):
        torch.manual_seed(470 + i)
        x = (torch.rand(2, 3, 5, 6) * 4 - 2).requires_grad_(True)
        y = F.pad(x, (LEFT, RIGHT, TOP, BOTTOM), mode=mode)
        grad_y = torch.rand(y.shape) * 4 - 2
        (grad_x,) = torch.autograd.grad(y, x, grad_y)
        case = {"op": "pad", "params": {"mode": ours, "pads": [TOP, LEFT, BOTTOM, RIGHT]},
                "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)}, "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}}
        path = os.path.join(OUT, "047_pad_%s.json" % ours)
        with open(path, "w") as f:
            json.dump(case, f)
        print(path)


if __name__ == "__main__":
    main()
