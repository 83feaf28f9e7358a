"""Runs onnx.checker (full check, with shape inference) on each ONNX file given; prints one
line per file and exits 1 on the first failure. Use Debian's python3-onnx: /usr/bin/python3."""
import sys

import onnx


def main(paths):
    for p in paths:
        model = onnx.load(p)
        onnx.checker.check_model(model, full_check=True)
        ops = sorted({n.op_type for n in model.graph.node})
        opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        print("input %s: %s" % (model.graph.input[0].name, model.graph.input[0].doc_string))
        print("ok %s opset %s ops %s" % (p, opset, ",".join(ops)))  # last: callers read the ops to the end


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as e:  # noqa: BLE001 - report any checker failure as a test failure
        print("onnx.checker failed: %s: %s" % (type(e).__name__, e))
        sys.exit(1)
