#!/usr/bin/env python3
"""CLI soak (ctest soak_cli, label soak; run by scripts/soak).

Runs `quantscope-cli train` N times (default 200) on a small IDX fixture with a random strategy,
number format, granularity, calibration and export target, and sends each one SIGINT at a random
moment. A run passes when:
  - it ends by itself within --timeout seconds after the signal (no hang);
  - it was not killed by a signal (no crash; `train` catches SIGINT from its first line on: the
    driver waits until /proc/<pid>/status shows SIGINT caught, so the random moment lies inside
    the command, not in the dynamic loader before main());
  - its exit code is 0 (finished before the signal took effect), 130 (stopped), or 2/3/4 with a
    one-line message on stderr (an option combination the CLI refuses, a data or numeric error);
    never 1 (internal error);
  - no temporary file is left: neither <export>.tmp-* next to the export target nor anything in
    the run's own TMPDIR; a run that exits 0 with --export has written the file.
Prints one line per failing run and a summary; exits 1 if any run failed.
"""
import argparse
import collections
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

STRATEGIES = ["fp32", "ptq", "qat", "mixed", "lowp", "progressive"]
INT_FORMATS = ["int8", "int4", "int2", "int16", "uint8", "uint4"]
FLOAT_FORMATS = ["fp16", "bf16", "fp8-e4m3", "fp8-e5m2", "mxint8", "mxfp8-e4m3", "mxfp4"]
GRANULARITIES = ["global", "layer", "tensor", "channel", "group:8"]
CALIBRATIONS = ["minmax", "moving-average", "percentile", "mse"]
MODELS = ["seed-cnn", "seed-cnn-bn", "lenet5", "mlp"]


def write_idx(path, dims, data, dtype_code=0x08):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, dtype_code, len(dims)))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(bytes(data))


def write_fixture(folder, rng, n_train=512, n_test=64):
    """An MNIST-layout folder: class k is a bright block at its own place on noise."""
    for n, images, labels in ((n_train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                              (n_test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        px = bytearray(n * 28 * 28)
        lb = bytearray(n)
        for i in range(n):
            k = rng.randrange(10)
            lb[i] = k
            base = i * 784
            for j in range(784):
                px[base + j] = rng.randrange(80)
            r0, c0 = 14 * (k // 5), 5 * (k % 5)
            for r in range(r0, r0 + 7):
                for c in range(c0, c0 + 4):
                    px[base + r * 28 + c] = 170 + rng.randrange(80)
        write_idx(os.path.join(folder, images), [n, 28, 28], px)
        write_idx(os.path.join(folder, labels), [n], lb)


def wait_until_sigint_caught(p, limit=30.0):
    """Waits until process p catches SIGINT (SigCgt bit 2 in /proc/<pid>/status) or has ended."""
    end = time.monotonic() + limit
    while time.monotonic() < end and p.poll() is None:
        try:
            with open("/proc/%d/status" % p.pid) as f:
                for line in f:
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)):
                        return True
        except OSError:
            return False
        time.sleep(0.0005)
    return False


def choose_args(rng, data, out_dir):
    strategy = rng.choice(STRATEGIES)
    if rng.random() < 0.2:  # any format: the refusals are exercised too
        fmt = rng.choice(INT_FORMATS + FLOAT_FORMATS)
    elif strategy in ("mixed", "lowp"):
        fmt = rng.choice(FLOAT_FORMATS[:4])
    else:
        fmt = rng.choice(INT_FORMATS)
    args = ["train", "--data", data, "--quiet", "--threads", "2", "--batch-size", str(rng.choice([8, 16, 32])),
            "--model", rng.choice(MODELS), "--strategy", strategy, "--format", fmt,
            "--granularity", rng.choice(GRANULARITIES), "--calibration", rng.choice(CALIBRATIONS),
            "--train-limit", str(rng.choice([32, 64, 128, 256])), "--test-limit", "32",
            "--seed", str(rng.randrange(1000))]
    if strategy != "progressive":
        args += ["--epochs", str(rng.choice([1, 2]))]
    if rng.random() < 0.5:
        args.append("--json")
    export = None
    if rng.random() < 0.5:
        export = os.path.join(out_dir, "model" + rng.choice([".qsm", ".onnx"]))
        args += ["--export", export]
    return args, export


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", required=True, help="path to quantscope-cli")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("QS_SOAK_SEED", "13")))
    ap.add_argument("--max-delay", type=float, default=2.0, help="SIGINT after U(0, max-delay) seconds")
    ap.add_argument("--verbose", action="store_true", help="print every run's outcome")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take after the signal")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    root = tempfile.mkdtemp(prefix="qs-cli-soak-")
    failures = []
    codes = collections.Counter()
    t0 = time.monotonic()
    try:
        data = os.path.join(root, "data")
        os.mkdir(data)
        write_fixture(data, rng)
        for i in range(a.runs):
            out_dir = os.path.join(root, "out%d" % i)
            tmp_dir = os.path.join(root, "tmp%d" % i)
            os.mkdir(out_dir)
            os.mkdir(tmp_dir)
            args, export = choose_args(rng, data, out_dir)
            # A third of the signals land in the first 50 ms (start-up, dataset loading), the rest anywhere.
            delay = rng.uniform(0.0, 0.05) if rng.random() < 0.33 else rng.uniform(0.0, a.max_delay)
            env = dict(os.environ, TMPDIR=tmp_dir)
            p = subprocess.Popen([a.cli] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            wait_until_sigint_caught(p)
            try:
                p.wait(timeout=delay)
                signalled = False
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
                signalled = True
            try:
                out, err = p.communicate(timeout=a.timeout)
                hung = False
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                hung = True
            err = err.decode(errors="replace").strip()
            rc = p.returncode
            codes["hang" if hung else ("signal %d" % -rc if rc < 0 else "exit %d" % rc)] += 1
            problems = []
            if hung:
                problems.append("no exit within %.0f s of SIGINT (hang)" % a.timeout)
            elif rc < 0:
                problems.append("killed by signal %d (%s)" % (-rc, signal.Signals(-rc).name))
            elif rc == 1:
                problems.append("internal error (exit 1)")
            elif rc in (2, 3, 4) and not err.startswith("quantscope-cli train:"):
                problems.append("exit %d without a one-line message" % rc)
            elif rc not in (0, 2, 3, 4, 130):
                problems.append("unexpected exit code %d" % rc)
            left = [f for f in os.listdir(out_dir) if ".tmp" in f] + os.listdir(tmp_dir)
            if left:
                problems.append("temporary files left: %s" % ", ".join(sorted(left)))
            if rc == 0 and export and not os.path.exists(export):
                problems.append("exit 0 but %s was not written" % export)
            if a.verbose:
                print("run %d: %s after %.2f s -> %s %s" % (i, "SIGINT" if signalled else "no signal", delay,
                      "hang" if hung else rc, err.splitlines()[-1][:160] if err else ""), flush=True)
            if problems:
                failures.append(i)
                print("run %d (SIGINT %s after %.2f s): %s\n  %s %s\n  stderr: %s" %
                      (i, "sent" if signalled else "not sent, it had ended", delay, "; ".join(problems), a.cli,
                       " ".join(args), err[-400:]), flush=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("cli soak: %d runs in %.0f s, %d failed; outcomes: %s" %
          (a.runs, time.monotonic() - t0, len(failures),
           ", ".join("%s x%d" % (k, v) for k, v in sorted(codes.items()))), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
