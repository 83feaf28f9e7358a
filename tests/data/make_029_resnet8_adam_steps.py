#!/usr/bin/python3
"""Writes 029_resnet8_adam_steps.json: PyTorch's resnet8 (../shared/reference/common.py ResNet8,
the definition QuantScope's preset reproduces) trained three Adam steps in training mode from
fixed weights, then evaluated. tst_training's resnet8MatchesPyTorchSteps replays the same steps
on QuantScope's preset and compares, which pins every training semantic that moves accuracy:
BatchNorm eps, momentum convention, unbiased running variance, eval with running statistics,
bias-free convs, the projection shortcuts, global average pooling, NLL of log-softmax, Adam.

The weights are not stored: both sides compute them from `u(t, i)` below (splitmix64 of
t * 2^32 + i, scaled to [-1, 1)), t = the tensor's index in "tensors" (QuantScope's parameter
order), i = the element's row-major index:
  conv / fc weight and fc bias: u(t, i) / sqrt(fan_in)  (the range of PyTorch's default init)
  BN gamma: 1 + 0.1 u(t, i);  BN beta: 0.1 u(t, i)
Gradients and parameters are compared through per-tensor probes (sum_i v[i] u(t + 1000, i), in
double) and L2 norms, to keep the file small.

Usage: /usr/bin/python3 tests/data/make_029_resnet8_adam_steps.py [REFERENCE_DIR] [OUT]
  REFERENCE_DIR defaults to /work/shared/reference (holding common.py).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

REF = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/reference"
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "029_resnet8_adam_steps.json")
sys.path.insert(0, REF)
from common import ResNet8  # noqa: E402

N, H, W, CLASSES, STEPS, LR = 8, 12, 12, 10, 3, 1e-3
MASK = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def u(t, n):
    """u(t, i) for i < n, float64 in [-1, 1)."""
    return np.array([(splitmix64((t << 32) + i) >> 11) / float(1 << 53) * 2.0 - 1.0 for i in range(n)])


# QuantScope's parameter order (graph order of model_zoo.cpp's resnet8) -> PyTorch's names.
def layer_list():
    out = [("conv1", "conv1", "conv"), ("bn1", "bn1", "bn")]
    for k, proj in ((1, False), (2, True), (3, True)):
        p = "layer%d" % k
        out += [(p + ".conv1", p + ".conv1", "conv"), (p + ".bn1", p + ".bn1", "bn"),
                (p + ".conv2", p + ".conv2", "conv"), (p + ".bn2", p + ".bn2", "bn")]
        if proj:
            out += [(p + ".shortcut", p + ".shortcut.0", "conv"), (p + ".shortcut_bn", p + ".shortcut.1", "bn")]
    out.append(("fc", "fc", "fc"))
    return out


def tensor_json(a):
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": [float("%.9g" % v) for v in a.reshape(-1)]}


def main():
    torch.manual_seed(29)
    torch.set_num_threads(1)
    model = ResNet8(cin=1, classes=CLASSES)
    modules = dict(model.named_modules())
    tensors = []  # (qs layer, qs param, torch tensor, kind)
    for qs, tn, kind in layer_list():
        m = modules[tn]
        if kind == "conv":
            tensors.append((qs, "weight", m.weight, "w"))
        elif kind == "bn":
            tensors += [(qs, "gamma", m.weight, "gamma"), (qs, "beta", m.bias, "beta")]
        else:
            tensors += [(qs, "weight", m.weight, "w"), (qs, "bias", m.bias, "b")]
    assert sum(t[2].numel() for t in tensors) == sum(p.numel() for p in model.parameters())
    fc_fan_in = modules["fc"].weight.shape[1]
    with torch.no_grad():
        for t, (qs, pn, p, kind) in enumerate(tensors):
            r = u(t, p.numel())
            if kind == "w":
                v = r / math.sqrt(p[0].numel())
            elif kind == "b":
                v = r / math.sqrt(fc_fan_in)
            elif kind == "gamma":
                v = 1.0 + 0.1 * r
            else:
                v = 0.1 * r
            p.copy_(torch.from_numpy(v.astype(np.float32)).reshape(p.shape))

    x = torch.randn(N, 1, H, W)
    y = torch.randint(0, CLASSES, (N,))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    outputs = {}
    for s in range(1, STEPS + 1):
        opt.zero_grad()
        out = model(x)
        loss = F.nll_loss(out, y)
        loss.backward()
        outputs["loss_step%d" % s] = float("%.9g" % loss.item())
        if s == 1:
            outputs["logp_train_step1"] = tensor_json(out.detach())
            outputs["grad_probe_step1"] = tensor_json(
                [float(np.dot(p.grad.double().numpy().reshape(-1), u(t + 1000, p.numel())))
                 for t, (_, _, p, _) in enumerate(tensors)])
            outputs["grad_norm_step1"] = tensor_json([float(p.grad.double().norm()) for _, _, p, _ in tensors])
        opt.step()
    outputs["param_probe_after"] = tensor_json(
        [float(np.dot(p.detach().double().numpy().reshape(-1), u(t + 1000, p.numel())))
         for t, (_, _, p, _) in enumerate(tensors)])
    for qs, tn, kind in layer_list():
        if kind == "bn":
            outputs["running_mean." + qs] = tensor_json(modules[tn].running_mean)
            outputs["running_var." + qs] = tensor_json(modules[tn].running_var)
    model.eval()
    with torch.no_grad():
        outputs["logp_eval_after"] = tensor_json(model(x))

    doc = {"op": "resnet8_adam_steps",
           "params": {"n": N, "c": 1, "h": H, "w": W, "classes": CLASSES, "steps": STEPS, "lr": LR,
                      "source": "common.py ResNet8, torch " + torch.__version__,
                      "tensors": [{"layer": qs, "param": pn, "shape": list(p.shape), "init": kind}
                                  for qs, pn, p, kind in tensors]},
           "inputs": {"x": tensor_json(x), "target": tensor_json(y.float())},
           "outputs": outputs}
    with open(OUT, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
