#!/usr/bin/python3
"""Writes the fixtures of a BatchNorm2d that normalises with the batch's statistics, as
torch.onnx.export writes it (Debian's torch 1.13), for tst_onnx_import_errors: QuantScope reads
BatchNorm with running statistics only, and refuses these two saying so, with the export that works.

  bnnotrack_op13.onnx   BatchNorm2d(track_running_stats=False), exported in eval mode: the batch's
                        mean and variance are a subgraph (Reshape, Transpose, ReduceMean, Sub, Mul)
                        feeding BatchNormalization
  bntrain_op13.onnx     BatchNorm2d with running statistics, exported with
                        training=torch.onnx.TrainingMode.TRAINING: BatchNormalization's training
                        form (5 outputs at opset 13)

Usage: /usr/bin/python3 tests/onnx_import/make_batchstats_fixtures.py [OUT_DIR]
"""
import os
import sys

import torch
import torch.nn as nn

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


class ConvBn(nn.Module):
    def __init__(self, track_running_stats):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=track_running_stats)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


torch.manual_seed(3)
x = torch.randn(2, 1, 8, 8)
torch.onnx.export(ConvBn(False).eval(), x, os.path.join(OUT, "bnnotrack_op13.onnx"), opset_version=13,
                  input_names=["input"], output_names=["logits"])
torch.onnx.export(ConvBn(True).train(), x, os.path.join(OUT, "bntrain_op13.onnx"), opset_version=13,
                  input_names=["input"], output_names=["logits"], training=torch.onnx.TrainingMode.TRAINING,
                  do_constant_folding=False)
