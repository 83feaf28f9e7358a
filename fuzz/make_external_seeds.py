#!/usr/bin/env python3
"""Seeds for fuzz_onnx_import whose weights are ONNX external data.

Copies the PyTorch exports of tests/onnx_import whose initializers fit in 64 KiB, with every
initializer's bytes moved to the external file 'data.bin' (each at its own offset, its length
given), the file fuzz_onnx_import writes in its data folder. The fuzzer then reads the weights
from there, and mutates the locations, offsets and lengths.

    /usr/bin/python3 fuzz/make_external_seeds.py tests/onnx_import build/fuzz/corpus/onnx_import
"""
import pathlib
import sys

import onnx

LIMIT = 64 * 1024  # the size of fuzz_onnx_import's data.bin


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_external_seeds.py FIXTURES_DIR OUT_DIR")
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(src.glob("*.onnx")):
        model = onnx.load(str(path))
        inits = [t for t in model.graph.initializer if t.raw_data]
        if not inits or sum(len(t.raw_data) for t in inits) > LIMIT:
            continue
        offset = 0
        for t in inits:
            size = len(t.raw_data)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", "data.bin"), ("offset", str(offset)), ("length", str(size))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            offset += size
        (out / f"ext_{path.stem}.onnx").write_bytes(model.SerializeToString())
        written += 1
    print(f"make_external_seeds: {written} models with external weights in {out}")


if __name__ == "__main__":
    main()
