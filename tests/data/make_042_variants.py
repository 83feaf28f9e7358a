#!/usr/bin/python3
"""Writes 042_*.json: PyTorch 1.13's answers for the golden ops of 001-028 with the parameters
those files leave at one value, in the golden format of tests/golden.h (one case a file):

- fake quantization per tensor at other widths and zero points (int3, uint4 with zero point 7,
  uint8 with zero point 200, int8 narrowed to [-127, 127]), with exact ties and values clipped
  far outside the range; per channel along axis 1 and with affine zero points;
- observers: uint8 symmetric (zero point 128), reduce_range, a custom [0, 15] range, all-positive,
  all-negative and all-zero data; per-channel affine along axis 1; a moving average with another
  constant on int8 symmetric;
- conv2d with stride 2 and padding 2, with dilation 2, 1x1 without bias, (H, W) pairs, and
  padding="same" (an even kernel: the odd pixel bottom/right) and "valid"; max_pool2d 3x3
  stride 2 padding 1 and with ceil_mode; avg_pool2d with padding, count_include_pad=False and
  ceil_mode; batch_norm2d in evaluation (running statistics given) and in training with
  momentum 0.3 from given running statistics; linear without bias;
- Adam with weight decay and with AMSGrad; SGD with Nesterov momentum, with dampening, plain;
- leaky_relu, elu and hardtanh at PyTorch's defaults (no params named) and other values, and gelu
  with approximate="tanh" under the op name "gelu".

tst_quant_golden and tst_layers_golden read every case of these ops, so each file here is checked
by the same code as the original cases (golden::rowsFor).

Usage: /usr/bin/python3 tests/data/make_042_variants.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.ao.quantization import MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def num(v):
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return float("%.9g" % v)


def tensor(t):
    t = t.detach()
    if t.dtype in (torch.int32, torch.int64):
        return {"shape": list(t.shape), "data": [int(v) for v in t.flatten().tolist()]}
    return {"shape": list(t.shape), "data": [num(v) for v in t.float().flatten().tolist()]}


def write(name, case):
    path = os.path.join(OUT, "042_%s.json" % name)
    with open(path, "w") as f:
        json.dump(case, f)
    print(path)


def fq_tensor(name, scale, zp, qmin, qmax, seed):
    torch.manual_seed(seed)
    span = scale * (qmax - qmin)
    lo = (qmin - zp) * scale
    ties = [(q + 0.5 - zp) * scale for q in range(qmin, min(qmax, qmin + 6))]
    # Values past the int64 range (inf, 1e30) are left out: PyTorch's x86 kernel converts them to
    # int64 out of range, which gives INT64_MIN and so quant_min even for +inf. QuantScope clamps
    # them to the side they are on (+inf to quant_max), as the kernel does on CPUs whose conversion
    # saturates.
    special = torch.tensor(ties + [lo - scale, lo + span + scale, 0.0, -0.0, 1e6, -1e6], dtype=torch.float32)
    x = torch.cat([special, torch.rand(250) * (1.4 * span) + lo - 0.2 * span]).requires_grad_(True)
    y = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    write(name, {"op": "fake_quantize_per_tensor_affine",
                 "params": {"scale": scale, "zero_point": zp, "quant_min": qmin, "quant_max": qmax},
                 "inputs": {"x": tensor(x)}, "outputs": {"y": tensor(y), "grad_x_ste": tensor(g)}})


def fq_channel(name, shape, axis, qmin, qmax, affine, seed):
    torch.manual_seed(seed)
    w = (torch.randn(shape) * 0.7).requires_grad_(True)
    c = shape[axis]
    scales = torch.rand(c) * 0.05 + 0.01
    if affine:
        zps = torch.randint(qmin, qmax + 1, (c,), dtype=torch.int32)
    else:
        zps = torch.full((c,), (qmin + qmax + 1) // 2 if qmin >= 0 else 0, dtype=torch.int32)
    y = torch.fake_quantize_per_channel_affine(w, scales, zps, axis, qmin, qmax)
    (g,) = torch.autograd.grad(y, w, torch.ones_like(y))
    write(name, {"op": "fake_quantize_per_channel_affine", "params": {"axis": axis, "quant_min": qmin, "quant_max": qmax},
                 "inputs": {"w": tensor(w), "scales": tensor(scales), "zero_points": tensor(zps.float())},
                 "outputs": {"y": tensor(y), "grad_w_ste": tensor(g)}})


def observer_params(obs):
    p = {"dtype": str(obs.dtype), "qscheme": str(obs.qscheme)}
    if obs.reduce_range:
        p["reduce_range"] = True
    return p


def minmax(name, x, custom=None, **kw):
    obs = MinMaxObserver(**kw) if custom is None else MinMaxObserver(quant_min=custom[0], quant_max=custom[1], **kw)
    obs(x)
    scale, zp = obs.calculate_qparams()
    params = observer_params(obs)
    if custom is not None:
        params["quant_min"], params["quant_max"] = custom
    write(name, {"op": "minmax_observer", "params": params, "inputs": {"x": tensor(x)},
                 "outputs": {"scale": float(scale.item()), "zero_point": int(zp.item())}})


def per_channel(name, w, ch_axis, **kw):
    obs = PerChannelMinMaxObserver(ch_axis=ch_axis, **kw)
    obs(w)
    scales, zps = obs.calculate_qparams()
    params = observer_params(obs)
    params["ch_axis"] = ch_axis
    write(name, {"op": "per_channel_minmax_observer", "params": params, "inputs": {"w": tensor(w)},
                 "outputs": {"scales": tensor(scales), "zero_points": tensor(zps.float())}})


def moving_average(name, batches, constant, **kw):
    obs = MovingAverageMinMaxObserver(averaging_constant=constant, **kw)
    for b in batches:
        obs(b)
    scale, zp = obs.calculate_qparams()
    params = observer_params(obs)
    params["averaging_constant"] = constant
    write(name, {"op": "moving_average_minmax_observer", "params": params,
                 "inputs": {"batch%d" % i: tensor(b) for i, b in enumerate(batches)},
                 "outputs": {"min_val": float(obs.min_val.item()), "max_val": float(obs.max_val.item()),
                             "scale": float(scale.item()), "zero_point": int(zp.item())}})


def weighted(name, op, params, x, w, b, fn):
    x = x.requires_grad_(True)
    w = w.requires_grad_(True)
    if b is not None:
        b = b.requires_grad_(True)
    y = fn(x, w, b)
    grad_y = torch.randn(y.shape)
    grads = torch.autograd.grad(y, [x, w] + ([b] if b is not None else []), grad_y)
    inputs = {"x": tensor(x), "w": tensor(w), "grad_y": tensor(grad_y)}
    outputs = {"y": tensor(y), "grad_x": tensor(grads[0]), "grad_w": tensor(grads[1])}
    if b is not None:
        inputs["b"] = tensor(b)
        outputs["grad_b"] = tensor(grads[2])
    write(name, {"op": op, "params": params, "inputs": inputs, "outputs": outputs})


def pool(name, op, params, x, fn):
    x = x.requires_grad_(True)
    y = fn(x)
    grad_y = torch.randn(y.shape)
    (gx,) = torch.autograd.grad(y, x, grad_y)
    write(name, {"op": op, "params": params, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                 "outputs": {"y": tensor(y), "grad_x": tensor(gx)}})


def pointwise(name, op, params, x, fn):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    grad_y = torch.rand(y.shape) * 4 - 2
    (gx,) = torch.autograd.grad(y, x, grad_y)
    write(name, {"op": op, "params": params, "inputs": {"x": tensor(x), "grad_y": tensor(grad_y)},
                 "outputs": {"y": tensor(y), "grad_x": tensor(gx)}})


def batch_norm(name, training, momentum, seed):
    torch.manual_seed(seed)
    x = (torch.randn(3, 4, 5, 6) * 1.5 + 0.7).requires_grad_(True)
    gamma = (torch.rand(4) + 0.5).requires_grad_(True)
    beta = torch.randn(4).requires_grad_(True)
    running_mean, running_var = torch.randn(4) * 0.5, torch.rand(4) + 0.5
    rm, rv = running_mean.clone(), running_var.clone()
    y = F.batch_norm(x, rm, rv, gamma, beta, training=training, momentum=momentum, eps=1e-5)
    grad_y = torch.randn(y.shape)
    gx, gg, gb = torch.autograd.grad(y, [x, gamma, beta], grad_y)
    write(name, {"op": "batch_norm2d", "params": {"training": training, "eps": 1e-5, "momentum": momentum},
                 "inputs": {"x": tensor(x), "gamma": tensor(gamma), "beta": tensor(beta), "grad_y": tensor(grad_y),
                            "running_mean": tensor(running_mean), "running_var": tensor(running_var)},
                 "outputs": {"y": tensor(y), "grad_x": tensor(gx), "grad_gamma": tensor(gg), "grad_beta": tensor(gb),
                             "running_mean": tensor(rm), "running_var": tensor(rv)}})


def optimizer(name, op, make, params, seed):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(20))
    p0 = p.detach().clone()
    opt = make([p])
    grads = [torch.randn(20) * (0.5 + i) for i in range(4)]
    for g in grads:
        p.grad = g.clone()
        opt.step()
    case = {"op": op, "params": params, "inputs": {"p0": tensor(p0)}, "outputs": {"p%d" % len(grads): tensor(p)}}
    for i, g in enumerate(grads):
        case["inputs"]["grad%d" % i] = tensor(g)
    write(name, case)


def main():
    # fake quantization
    fq_tensor("fq_tensor_b3_-4_3", 0.3, 0, -4, 3, 1)
    fq_tensor("fq_tensor_b4_0_15_zp7", 0.125, 7, 0, 15, 2)
    fq_tensor("fq_tensor_b8_0_255_zp200", 0.0173, 200, 0, 255, 3)
    fq_tensor("fq_tensor_b8_-127_127", 0.031, 0, -127, 127, 4)
    fq_channel("fq_channel_axis1_b8", (5, 8), 1, -128, 127, False, 5)
    fq_channel("fq_channel_u8_affine", (6, 3, 3, 3), 0, 0, 255, True, 6)
    fq_channel("fq_channel_b4_affine_axis1", (4, 6, 2, 2), 1, -8, 7, True, 7)
    # observers
    torch.manual_seed(8)
    x = torch.randn(500) * 2.0 + 0.3
    minmax("observer_minmax_u8_sym", x, dtype=torch.quint8, qscheme=torch.per_tensor_symmetric)
    minmax("observer_minmax_s8_aff_reduce", x, dtype=torch.qint8, qscheme=torch.per_tensor_affine, reduce_range=True)
    minmax("observer_minmax_u8_aff_reduce", x, dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=True)
    minmax("observer_minmax_u4_custom", x, custom=(0, 15), dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    minmax("observer_minmax_s4_custom_sym", x, custom=(-8, 7), dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    minmax("observer_minmax_u8_positive", torch.rand(300) * 3 + 0.5, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    minmax("observer_minmax_s8_negative", -torch.rand(300) * 3 - 0.5, dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    minmax("observer_minmax_u8_zeros", torch.zeros(64), dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    w = torch.randn(4, 6, 3, 3)
    w[:, 2] = torch.rand(4, 3, 3)  # an all-positive channel along axis 1
    per_channel("observer_perchannel_u8_aff_axis1", w, 1, dtype=torch.quint8, qscheme=torch.per_channel_affine)
    w0 = torch.randn(5, 7)
    w0[3] = 0.0  # an all-zero channel
    per_channel("observer_perchannel_s8_aff", w0, 0, dtype=torch.qint8, qscheme=torch.per_channel_affine)
    torch.manual_seed(9)
    moving_average("observer_moving_average_s8_sym", [torch.randn(200) * (1 + 0.5 * i) for i in range(6)], 0.1,
                   dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    # layers
    torch.manual_seed(10)
    weighted("conv2d_s2_p2", "conv2d", {"stride": 2, "padding": 2}, torch.randn(2, 3, 9, 9), torch.randn(5, 3, 3, 3) * 0.3,
             torch.randn(5), lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=2))
    weighted("conv2d_dilation2", "conv2d", {"stride": 1, "padding": 2, "dilation": 2}, torch.randn(2, 4, 8, 8),
             torch.randn(3, 4, 3, 3) * 0.3, torch.randn(3), lambda x, w, b: F.conv2d(x, w, b, padding=2, dilation=2))
    weighted("conv2d_1x1_nobias", "conv2d", {"stride": 1, "padding": 0, "bias": False}, torch.randn(3, 6, 5, 5),
             torch.randn(4, 6, 1, 1) * 0.3, None, lambda x, w, b: F.conv2d(x, w, None))
    weighted("conv2d_rect", "conv2d", {"stride": [1, 2], "padding": [1, 0]}, torch.randn(2, 2, 7, 9),
             torch.randn(3, 2, 3, 2) * 0.3, torch.randn(3), lambda x, w, b: F.conv2d(x, w, b, stride=(1, 2), padding=(1, 0)))
    weighted("linear_nobias", "linear", {}, torch.randn(6, 9), torch.randn(4, 9) * 0.3, None, lambda x, w, b: F.linear(x, w))
    x = torch.randn(2, 3, 9, 9)
    pool("max_pool2d_k3_s2_p1", "max_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, x,
         lambda t: F.max_pool2d(t, 3, 2, 1))
    pool("max_pool2d_ceil", "max_pool2d", {"kernel": 2, "stride": 2, "padding": 0, "ceil_mode": True}, x,
         lambda t: F.max_pool2d(t, 2, 2, 0, ceil_mode=True))
    pool("avg_pool2d_k3_s2_p1", "avg_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, x,
         lambda t: F.avg_pool2d(t, 3, 2, 1))
    pool("avg_pool2d_exclude_pad", "avg_pool2d", {"kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False}, x,
         lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False))
    pool("avg_pool2d_ceil", "avg_pool2d", {"kernel": 2, "stride": 2, "padding": 0, "ceil_mode": True}, x,
         lambda t: F.avg_pool2d(t, 2, 2, 0, ceil_mode=True))
    batch_norm("batch_norm2d_eval", False, 0.1, 11)
    batch_norm("batch_norm2d_train_momentum", True, 0.3, 12)
    # optimizers
    optimizer("optim_adam_weight_decay", "adam", lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
              {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-8, "weight_decay": 0.01}, 13)
    optimizer("optim_adam_amsgrad", "adam", lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
              {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0, "amsgrad": True}, 14)
    optimizer("optim_sgd_nesterov", "sgd_momentum", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
              {"lr": 0.05, "momentum": 0.9, "nesterov": True}, 15)
    optimizer("optim_sgd_dampening", "sgd_momentum",
              lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.001),
              {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.001}, 16)
    optimizer("optim_sgd_plain", "sgd_momentum", lambda p: torch.optim.SGD(p, lr=0.1),
              {"lr": 0.1, "momentum": 0.0}, 17)
    # pointwise activations at PyTorch's defaults (no params named) and other parameters
    torch.manual_seed(18)
    x = torch.cat([torch.tensor([0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 20.0, -20.0]), torch.rand(200) * 12 - 6])
    pointwise("leaky_relu_default", "leaky_relu", {}, x, F.leaky_relu)
    pointwise("leaky_relu_0.2", "leaky_relu", {"negative_slope": 0.2}, x, lambda t: F.leaky_relu(t, 0.2))
    pointwise("elu_default", "elu", {}, x, F.elu)
    pointwise("elu_2", "elu", {"alpha": 2.0}, x, lambda t: F.elu(t, 2.0))
    pointwise("hardtanh_default", "hardtanh", {}, x, F.hardtanh)
    pointwise("gelu_approximate_tanh", "gelu", {"approximate": "tanh"}, x, lambda t: F.gelu(t, approximate="tanh"))
    # convolutions with PyTorch's string paddings
    torch.manual_seed(19)
    weighted("conv2d_padding_same", "conv2d", {"stride": 1, "padding": "same", "dilation": 2}, torch.randn(2, 3, 7, 8),
             torch.randn(4, 3, 2, 3) * 0.3, torch.randn(4), lambda x, w, b: F.conv2d(x, w, b, padding="same", dilation=2))
    weighted("conv2d_padding_valid", "conv2d", {"stride": 1, "padding": "valid"}, torch.randn(2, 3, 6, 6),
             torch.randn(2, 3, 3, 3) * 0.3, torch.randn(2), lambda x, w, b: F.conv2d(x, w, b, padding="valid"))


if __name__ == "__main__":
    main()
