#!/usr/bin/python3
"""Writes the ONNX fixtures of graphs with several outputs: small PyTorch modules whose forward
returns a tuple, exported with torch.onnx.export (Debian's python3-torch 1.13; run with
/usr/bin/python3), and PyTorch's class scores for them.

For each case NAME it writes, next to this script (or into OUT_DIR):
  NAME.onnx   the export (input 'input' [N, 1, 8, 8]; outputs as the case names them)
  NAME.json   as make_fixtures.py's: "input", "input_shape", "output" (the class scores, flat),
              "output_shape", "head": "logits", and "scores_output": the graph output that holds them
tst_onnx_outputs reads them.

Usage: /usr/bin/python3 tests/onnx_import/make_outputs_fixtures.py [OUT_DIR]
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


class TwoHeads(nn.Module):
    """conv-relu-pool-flatten features [N, 36] and a Linear head [N, 10]; forward returns them in
    the order `order` names ("scores" first, "features" first, or the scores and their softmax)."""

    def __init__(self, order):
        super().__init__()
        self.order = order
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(36, 10)

    def forward(self, x):
        f = torch.flatten(F.max_pool2d(F.relu(self.conv(x)), 2), 1)
        s = self.fc(f)
        if self.order == "features":
            return f, s
        if self.order == "probs":
            return s, F.softmax(s, dim=1)
        return s, f


CASES = [
    # name, order, opset, constant folding, dynamic batch, output names (the scores' first when it is first)
    ("twoout_scoresfirst_op13_fold", "scores", 13, True, False, ["logits", "features"]),
    ("twoout_featuresfirst_op13_fold_dyn", "features", 13, True, True, ["features", "logits"]),
    ("twoout_probs_op11_nofold", "probs", 11, False, False, ["logits", "probs"]),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, order, opset, fold, dynamic, names) in enumerate(CASES):
        torch.manual_seed(300 + i)
        model = TwoHeads(order).eval()
        x = torch.randn(3, 1, 8, 8)
        path = os.path.join(OUT, name + ".onnx")
        axes = {"input": {0: "N"}, **{n: {0: "N"} for n in names}} if dynamic else None
        torch.onnx.export(model, x, path, opset_version=opset, do_constant_folding=fold, dynamic_axes=axes,
                          training=torch.onnx.TrainingMode.EVAL, input_names=["input"], output_names=names)
        with torch.no_grad():
            ys = model(x)
        k = 1 if order == "features" else 0
        scores = ys[k]
        ref = {"opset": opset, "input_shape": list(x.shape), "input": x.flatten().tolist(),
               "output_shape": list(scores.shape), "output": scores.flatten().tolist(), "head": "logits",
               "scores_output": names[k]}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(ref, f)
        print(name, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
