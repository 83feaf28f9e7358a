#!/usr/bin/python3
"""Writes 038_conv_geometry.json: PyTorch's nn.Conv2d forward and backward for windows that are
not square (rectangular kernels, two strides, asymmetric padding, dilation; grouped and
depthwise). One file, {"op": "conv2d_geometry", "cases": [...]}; each case has "name", "params"
({"kernel": [kh, kw], "stride": [sh, sw], "padding": [top, left, bottom, right], "dilation":
[dh, dw], "groups", "bias"}), "inputs" {x, w, b (with a bias), grad_y} and "outputs" {y, grad_x,
grad_w, grad_b (with a bias)}, tensors as in tests/golden.h. Asymmetric padding is PyTorch's
padding='same' with an even kernel (one more at the bottom and right) or an explicit F.pad before
the convolution. tst_layers_golden goldenConvGeometry compares QuantScope's Conv2d with them.

Usage: /usr/bin/python3 tests/data/make_038_conv_geometry.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

# name, in, out, kernel, stride, padding (top, left, bottom, right), dilation, groups, bias, input (H, W)
CASES = [
    ("k1x7_p0_3", 4, 5, (1, 7), (1, 1), (0, 3, 0, 3), (1, 1), 1, True, (6, 9)),
    ("k7x1_p3_0", 4, 3, (7, 1), (1, 1), (3, 0, 3, 0), (1, 1), 1, True, (9, 6)),
    ("k3_s2x1_p1", 3, 4, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 1, True, (7, 6)),
    ("k3_d2_p2", 3, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, True, (8, 7)),
    ("k4_same", 3, 4, (4, 4), (1, 1), "same", (1, 1), 1, True, (6, 7)),
    ("k3x2_s1x2_fpad_1_2_3_0", 3, 2, (3, 2), (1, 2), (1, 2, 3, 0), (1, 1), 1, False, (5, 8)),
    ("k3x5_s1x2_d1x2_c8", 8, 4, (3, 5), (1, 2), (1, 2, 1, 2), (1, 2), 1, True, (7, 11)),
    ("g2_k3_d2x1_p2_1", 4, 6, (3, 3), (1, 1), (2, 1, 2, 1), (2, 1), 2, True, (7, 7)),
    ("depthwise_k3_s2_d2_p2", 3, 3, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 3, False, (9, 8)),
]


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().flatten().tolist()]}


def main():
    cases = []
    for i, (name, cin, cout, k, s, p, d, g, bias, hw) in enumerate(CASES):
        torch.manual_seed(38 * 100 + i)
        x = (torch.rand(2, cin, *hw) * 2 - 1).requires_grad_(True)
        if p == "same":
            conv = nn.Conv2d(cin, cout, k, stride=s, padding="same", dilation=d, groups=g, bias=bias)
            total = [d[a] * (k[a] - 1) for a in range(2)]  # PyTorch: the odd one at the end
            pads = [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]
            run = conv
        else:
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=0, dilation=d, groups=g, bias=bias)
            pads = list(p)
            # F.pad takes (left, right, top, bottom)
            run = lambda t, conv=conv, p=p: conv(F.pad(t, (p[1], p[3], p[0], p[2])))
        y = run(x)
        grad_y = torch.rand(y.shape) * 2 - 1
        params = [x, conv.weight] + ([conv.bias] if bias else [])
        grads = torch.autograd.grad(y, params, grad_y)
        inputs = {"x": tensor(x), "w": tensor(conv.weight), "grad_y": tensor(grad_y)}
        outputs = {"y": tensor(y), "grad_x": tensor(grads[0]), "grad_w": tensor(grads[1])}
        if bias:
            inputs["b"] = tensor(conv.bias)
            outputs["grad_b"] = tensor(grads[2])
        cases.append({"name": name, "params": {"kernel": list(k), "stride": list(s), "padding": pads,
                                                "dilation": list(d), "groups": g, "bias": bias},
                      "inputs": inputs, "outputs": outputs})
    path = os.path.join(OUT, "038_conv_geometry.json")
    with open(path, "w") as f:
        json.dump({"op": "conv2d_geometry", "cases": cases}, f)
    print(path)


if __name__ == "__main__":
    main()
