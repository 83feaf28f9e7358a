#!/usr/bin/python3
"""Writes 043_lsq_*.json: PyTorch 1.13's learnable fake quantization, the LSQ operator
(torch._fake_quantize_learnable_per_tensor_affine and _per_channel_affine: Esser et al., "Learned
Step Size Quantization", ICLR 2020), forward and backward, in the golden format of tests/golden.h.

Each case: inputs x (or w), scale, zero_point, grad_y; params quant_min, quant_max, grad_factor
(LSQ's g = 1 / sqrt(N Qp): N elements of one scale's slot, Qp = quant_max - zero_point) and, per
channel, axis; outputs y, grad_x (the straight-through mask times grad_y) and grad_scale (g times
the sum over the slot of grad_y * d y / d scale: round(x/s) - x/s inside the range, quant_min - zp
below, quant_max - zp above). x holds exact ties, values clipped at both ends and 0.

tst_quant_golden lsqStepGradient compares QuantScope's fake quantization and lsqStepGradient
(quant/lsq.h) with them.

Usage: /usr/bin/python3 tests/data/make_043_lsq.py [OUT_DIR]
"""
import json
import math
import os
import sys

import torch

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().float().flatten().tolist()]}


def per_tensor(name, scale, zp, qmin, qmax, seed):
    torch.manual_seed(seed)
    lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
    ties = [(q + 0.5 - zp) * scale for q in range(qmin, min(qmax, qmin + 5))]
    special = torch.tensor(ties + [lo - 3 * scale, hi + 3 * scale, 0.0], dtype=torch.float32)
    x = torch.cat([special, torch.rand(300) * 1.3 * (hi - lo) + lo - 0.15 * (hi - lo)]).requires_grad_(True)
    s = torch.tensor([scale], requires_grad=True)
    z = torch.tensor([float(zp)], requires_grad=True)
    g = 1.0 / math.sqrt(x.numel() * (qmax - zp))
    y = torch._fake_quantize_learnable_per_tensor_affine(x, s, z, qmin, qmax, g)
    grad_y = torch.rand(y.shape) * 2 - 1
    gx, gs = torch.autograd.grad(y, [x, s], grad_y)
    case = {"op": "fake_quantize_learnable_per_tensor_affine",
            "params": {"quant_min": qmin, "quant_max": qmax, "grad_factor": g},
            "inputs": {"x": tensor(x), "scale": tensor(s), "zero_point": tensor(z), "grad_y": tensor(grad_y)},
            "outputs": {"y": tensor(y), "grad_x": tensor(gx), "grad_scale": tensor(gs)}}
    write(name, case)


def per_channel(name, shape, qmin, qmax, seed):
    torch.manual_seed(seed)
    w = (torch.randn(shape) * 0.5).requires_grad_(True)
    c = shape[0]
    s = (torch.rand(c) * 0.03 + 0.01).requires_grad_(True)
    z = torch.zeros(c, requires_grad=True)
    n = w.numel() // c
    g = 1.0 / math.sqrt(n * qmax)
    y = torch._fake_quantize_learnable_per_channel_affine(w, s, z, 0, qmin, qmax, g)
    grad_y = torch.rand(y.shape) * 2 - 1
    gw, gs = torch.autograd.grad(y, [w, s], grad_y)
    case = {"op": "fake_quantize_learnable_per_channel_affine",
            "params": {"axis": 0, "quant_min": qmin, "quant_max": qmax, "grad_factor": g},
            "inputs": {"x": tensor(w), "scale": tensor(s), "zero_point": tensor(z), "grad_y": tensor(grad_y)},
            "outputs": {"y": tensor(y), "grad_x": tensor(gw), "grad_scale": tensor(gs)}}
    write(name, case)


def write(name, case):
    path = os.path.join(OUT, "043_%s.json" % name)
    with open(path, "w") as f:
        json.dump(case, f)
    print(path)


def main():
    per_tensor("lsq_tensor_s8", 0.05, 0, -128, 127, 1)
    per_tensor("lsq_tensor_u8_zp", 0.02, 37, 0, 255, 2)
    per_tensor("lsq_tensor_s4", 0.2, 0, -8, 7, 3)
    per_channel("lsq_channel_s8", (6, 4, 3, 3), -128, 127, 4)
    per_channel("lsq_channel_s3", (5, 10), -4, 3, 5)


if __name__ == "__main__":
    main()
