"""Writes a damaged copy of a QuantScope ONNX export, for the reader's error tests:
    mutate_onnx.py IN.onnx OUT.onnx MUTATION
MUTATION: unknown-op (the first Relu becomes Selu), dangling-input (the first Add reads a value
no node makes), clip-bounds (the first Clip's max becomes -1, below its min), output-not-last (the graph output
is an earlier value), bad-group (the first depthwise Conv claims group 3).
Saved without the checker: some of these are valid ONNX, some are not. /usr/bin/python3."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def first(graph, op):
    return next(n for n in graph.node if n.op_type == op)


def main(src, dst, mutation):
    model = onnx.load(src)
    g = model.graph
    if mutation == "unknown-op":
        first(g, "Relu").op_type = "Shrink"
    elif mutation == "dangling-input":
        first(g, "Add").input[1] = "nonexistent"
    elif mutation == "clip-bounds":
        name = first(g, "Clip").input[2]
        t = next(t for t in g.initializer if t.name == name)
        t.CopyFrom(numpy_helper.from_array(np.array(-1.0, dtype=np.float32), name))
    elif mutation == "output-not-last":
        # The last node now makes a new name; the graph output names the value before it.
        last = g.node[-1]
        last.output[0] = "dead_end"
        g.output[0].name = last.input[0]
    elif mutation == "bad-group":
        for n in g.node:
            group = next((a for a in n.attribute if a.name == "group"), None)
            if n.op_type == "Conv" and group is not None and group.i > 1:
                group.i = 3
                break
    else:
        raise SystemExit("unknown mutation " + mutation)
    onnx.save(model, dst)


if __name__ == "__main__":
    main(*sys.argv[1:4])
