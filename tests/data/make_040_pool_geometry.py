#!/usr/bin/python3
"""Writes 040_pool_geometry.json: PyTorch's max and average pooling forward and backward for windows
that are not square: rectangular kernels, two strides, ceil_mode (with PyTorch's rule that no
window starts in the bottom/right padding), padding on one axis only, asymmetric padding (an
F.pad with -inf before F.max_pool2d, as an ONNX MaxPool's pads [top, left, bottom, right] mean),
count_include_pad=False, and a global max over a non-square map. One file, {"op":
"pool_geometry", "cases": [...]}; each case has "name", "params" ({"kind": "max" | "avg",
"kernel": [kh, kw], "stride": [sh, sw], "padding": [top, left, bottom, right], "ceil_mode",
"count_include_pad"}), "inputs" {x, grad_y} and "outputs" {y, grad_x}, tensors as in
tests/golden.h. tst_layers_golden goldenPoolGeometry compares QuantScope's MaxPool2d and
AvgPool2d with them.

Usage: /usr/bin/python3 tests/data/make_040_pool_geometry.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

# name, kind, kernel, stride, padding (top, left, bottom, right), ceil_mode, count_include_pad, channels, input (H, W), ties
CASES = [
    ("max_k2_ceil_odd", "max", (2, 2), (2, 2), (0, 0, 0, 0), True, True, 3, (7, 9), False),
    ("max_k3_s2_p1_ceil", "max", (3, 3), (2, 2), (1, 1, 1, 1), True, True, 2, (8, 6), False),
    ("max_k2_s2_p1_ceil_drops_last", "max", (2, 2), (2, 2), (1, 1, 1, 1), True, True, 2, (5, 7), False),
    ("max_k2x1", "max", (2, 1), (2, 1), (0, 0, 0, 0), False, True, 3, (6, 5), False),
    ("max_k1x2_ties", "max", (1, 2), (1, 2), (0, 0, 0, 0), False, True, 2, (4, 7), True),
    ("max_k3x2_s2x1_p1_0_ceil", "max", (3, 2), (2, 1), (1, 0, 1, 0), True, True, 2, (7, 6), False),
    ("max_k2x3_s1x2_asym_pads", "max", (2, 3), (1, 2), (0, 1, 1, 0), False, True, 2, (6, 7), False),
    ("max_k3x2_s2x1_p1_overlap_ties", "max", (3, 2), (2, 1), (1, 1, 1, 1), False, True, 2, (7, 6), True),
    ("max_global_5x7", "max", (5, 7), (5, 7), (0, 0, 0, 0), False, True, 4, (5, 7), False),
    ("avg_k2_ceil_odd", "avg", (2, 2), (2, 2), (0, 0, 0, 0), True, True, 3, (7, 9), False),
    ("avg_k3_s2_p1_ceil", "avg", (3, 3), (2, 2), (1, 1, 1, 1), True, True, 2, (8, 6), False),
    ("avg_k3_s2_p1_ceil_exclude", "avg", (3, 3), (2, 2), (1, 1, 1, 1), True, False, 2, (8, 6), False),
    ("avg_k2_s2_p1_ceil_drops_last", "avg", (2, 2), (2, 2), (1, 1, 1, 1), True, True, 2, (5, 7), False),
    ("avg_k2x1", "avg", (2, 1), (2, 1), (0, 0, 0, 0), False, True, 3, (6, 5), False),
    ("avg_k3x2_s2x1_p1_0_ceil", "avg", (3, 2), (2, 1), (1, 0, 1, 0), True, True, 2, (7, 6), False),
    ("avg_k3x2_s2x1_p1_0_exclude", "avg", (3, 2), (2, 1), (1, 0, 1, 0), False, False, 2, (7, 6), False),
    ("avg_k3_s1_p1_exclude", "avg", (3, 3), (1, 1), (1, 1, 1, 1), False, False, 2, (5, 6), False),
]


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def main():
    cases = []
    for i, (name, kind, k, s, p, ceil, count, c, hw, ties) in enumerate(CASES):
        torch.manual_seed(40 * 100 + i)
        x = torch.rand(2, c, *hw) * 2 - 1
        if ties:
            x = torch.round(x * 2) / 2  # -1, -0.5, 0, 0.5, 1: many equal maxima
        x.requires_grad_(True)
        if p[0] == p[2] and p[1] == p[3]:
            pool = F.max_pool2d if kind == "max" else (lambda t, *a, **kw: F.avg_pool2d(t, *a, count_include_pad=count, **kw))
            y = pool(x, k, s, (p[0], p[1]), ceil_mode=ceil)
        else:
            assert kind == "max" and not ceil  # asymmetric padding: ONNX's pads, -inf around the input
            y = F.max_pool2d(F.pad(x, (p[1], p[3], p[0], p[2]), value=float("-inf")), k, s)
        grad_y = torch.rand(y.shape) * 2 - 1
        (grad_x,) = torch.autograd.grad(y, [x], grad_y)
        cases.append({"name": name, "params": {"kind": kind, "kernel": list(k), "stride": list(s), "padding": list(p),
                                                "ceil_mode": ceil, "count_include_pad": count},
                      "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                      "outputs": {"y": tensor(y), "grad_x": tensor(grad_x)}})
        print(name, list(x.shape), "->", list(y.shape))
    path = os.path.join(OUT, "040_pool_geometry.json")
    with open(path, "w") as f:
        json.dump({"op": "pool_geometry", "cases": cases}, f)
    print(path)


if __name__ == "__main__":
    main()
