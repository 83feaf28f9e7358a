#!/usr/bin/python3
"""Converts pytorch_ref.py's M.onnx.expected.npz (input: normalised test images, logits: PyTorch's
output on them) into the JSON layout of make_fixtures.py, keeping the first COUNT images; without
COUNT it keeps all 256 and adds "predictions" (PyTorch's argmax on the 10k test images).

Usage: /usr/bin/python3 tests/onnx_import/npz_to_json.py M.onnx.expected.npz OUT.json [COUNT]
"""
import json
import sys

import numpy as np

src, out = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else None
z = np.load(src)
x, y = z["input"][:count], z["logits"][:count]
ref = {"input_shape": list(x.shape), "input": x.astype(np.float32).flatten().tolist(),
       "output_shape": list(y.shape), "output": y.astype(np.float32).flatten().tolist(), "head": "log_softmax"}
if count is None:  # PyTorch's argmax on the whole test split, for the opt-in 10k check
    ref["predictions"] = z["predictions"].astype(int).tolist()
with open(out, "w") as f:
    json.dump(ref, f)
