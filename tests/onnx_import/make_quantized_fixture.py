#!/usr/bin/python3
"""Writes torchao_fx_qdq_op13.onnx: a small CNN quantized by PyTorch itself (torch.ao FX graph
mode, fbgemm's default int8 qconfig, calibrated on random images) and exported as QDQ. QuantScope
reads only the QDQ files it wrote (they carry its quantscope.* metadata): tst_onnx_file_errors
checks that this one is refused with that said, not as an unsupported operator.

Usage: /usr/bin/python3 tests/onnx_import/make_quantized_fixture.py [OUT_DIR]   (Debian's torch 1.13)
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping, quantize_fx

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv2(F.relu(self.bn(self.conv1(x))))).mean([2, 3]))


torch.manual_seed(1)
images = torch.rand(64, 1, 28, 28)
model = SmallCnn().eval()
prepared = quantize_fx.prepare_fx(model, get_default_qconfig_mapping("fbgemm"), (images[:4],))
prepared(images)  # calibration
quantized = quantize_fx.convert_fx(prepared)
torch.onnx.export(quantized, images[:4], os.path.join(OUT, "torchao_fx_qdq_op13.onnx"), opset_version=13,
                  input_names=["input"], output_names=["logits"])
