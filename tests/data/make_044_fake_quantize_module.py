#!/usr/bin/python3
"""Writes 044_fq_module_*.json: what PyTorch 1.13's QAT activation point does over a run of
batches, torch.ao.quantization.FakeQuantize with its observer (the module prepare_qat inserts):
each batch first moves the observer, then is fake-quantized with the scale and zero point that
gives. In the golden format of tests/golden.h:

  {"op": "fake_quantize_module",
   "params": {"observer": "moving_average_minmax" | "minmax", "averaging_constant",
              "dtype", "qscheme", "reduce_range"},
   "inputs": {"batch0", "batch1", ...},
   "outputs": {"y0", "grad0", "scale0", "zero_point0", "y1", ...}}

grad<i> is the straight-through gradient of sum(y<i>) (1 inside the clip range, 0 outside).
Cases: PyTorch's default_fake_quant without reduce_range (uint8 affine, moving average), int8
symmetric moving average, and uint8 min-max. (With reduce_range, PyTorch's observer picks the
scale for [0, 127] while the module still clamps to [0, 255]; QuantScope has no such point.) The batches drift and
widen, hold exact zeros and an outlier, so the range moves every step. tst_quant_golden
fakeQuantizeModule runs QuantScope's ActivationQuantizer (quant/activation_quantizer.h) on them.

Usage: /usr/bin/python3 tests/data/make_044_fake_quantize_module.py [OUT_DIR]
"""
import json
import os
import sys

import torch
from torch.ao.quantization import FakeQuantize, MinMaxObserver, MovingAverageMinMaxObserver

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def tensor(t):
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.detach().float().flatten().tolist()]}


def case(name, observer, seed, **kw):
    torch.manual_seed(seed)
    fq = FakeQuantize(observer=observer, **kw)
    fq.train()
    params = {"observer": "moving_average_minmax" if observer is MovingAverageMinMaxObserver else "minmax",
              "dtype": str(kw["dtype"]), "qscheme": str(kw["qscheme"]), "reduce_range": kw.get("reduce_range", False)}
    if observer is MovingAverageMinMaxObserver:
        params["averaging_constant"] = kw.get("averaging_constant", 0.01)
    inputs, outputs = {}, {}
    for i in range(5):
        b = torch.randn(4, 3, 5, 5) * (1.0 + 0.4 * i) + 0.3 * i
        b[0, 0, 0, :3] = 0.0
        if i == 2:
            b[1, 1, 1, 1] = 9.0  # an outlier the moving average only partly follows
        x = b.clone().requires_grad_(True)
        y = fq(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        inputs["batch%d" % i] = tensor(b)
        outputs["y%d" % i] = tensor(y)
        outputs["grad%d" % i] = tensor(g)
        outputs["scale%d" % i] = float(fq.scale.item())
        outputs["zero_point%d" % i] = int(fq.zero_point.item())
    path = os.path.join(OUT, "044_fq_module_%s.json" % name)
    with open(path, "w") as f:
        json.dump({"op": "fake_quantize_module", "params": params, "inputs": inputs, "outputs": outputs}, f)
    print(path)


def main():
    case("u8_affine", MovingAverageMinMaxObserver, 2, quant_min=0, quant_max=255, dtype=torch.quint8,
         qscheme=torch.per_tensor_affine)
    case("s8_symmetric", MovingAverageMinMaxObserver, 3, quant_min=-128, quant_max=127, dtype=torch.qint8,
         qscheme=torch.per_tensor_symmetric, averaging_constant=0.05)
    case("u8_minmax", MinMaxObserver, 4, quant_min=0, quant_max=255, dtype=torch.quint8, qscheme=torch.per_tensor_affine)


if __name__ == "__main__":
    main()
