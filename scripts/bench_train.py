#!/usr/bin/python3
"""Training speed, accuracy and peak memory of QuantScope against the PyTorch reference.

Called by scripts/bench-train (which installs and builds first); see its --help. Each contender runs
alone, one after the other (never two at once on the shared cores); each round runs every contender
once. The peak resident memory of each run is its process's ru_maxrss, read by wait4(2), the same
way for both trainers.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

# QuantScope strategy -> (its extra train options, pytorch_ref.py mode). PyTorch has no pure
# low-precision trainer: lowp is compared with its bf16 autocast (amp), as mixed is.
STRATEGIES = {
    "fp32": ([], "fp32"),
    "mixed": (["--strategy", "mixed", "--format", "{fmt}"], "amp"),
    "lowp": (["--strategy", "lowp", "--format", "{fmt}"], "amp"),
    "qat": (["--strategy", "qat", "--format", "{fmt}", "--granularity", "channel"], "qat"),
}


def run(cmd, stdout_path):
    """Runs cmd with stdout to a file; returns (exit code, peak RSS in MiB)."""
    with open(stdout_path, "w") as out, open(stdout_path + ".err", "w") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss / 1024.0


def quantscope(a, strategy, tmp, tag):
    extra = [x.format(fmt=a.format) for x in STRATEGIES[strategy][0]]
    cmd = [a.cli, "train", "--model", a.model, "--optimizer", "adam", "--lr", "1e-3", "--epochs", str(a.epochs),
           "--batch-size", str(a.batch_size), "--threads", str(a.threads), "--seed", "1", "--json", "--quiet"] + extra
    if a.train_limit:
        cmd += ["--train-limit", str(a.train_limit)]
    path = os.path.join(tmp, tag + ".jsonl")
    code, rss = run(cmd, path)
    if code != 0:
        sys.exit("bench-train: QuantScope failed (%s):\n%s" % (" ".join(cmd), open(path + ".err").read()[-2000:]))
    ev = [json.loads(l) for l in open(path) if l.strip()]
    ep = [e for e in ev if e["event"] == "epoch"]
    start = next((e for e in ev if e["event"] == "start"), {})
    acc = ep[-1].get("quant_test_acc", ep[-1]["test_acc"])
    return {"ips": sum(e["images_per_s"] for e in ep) / len(ep), "acc": acc, "rss": rss,
            "path": start.get("compute", start.get("kernels", ""))}


def pytorch(a, mode, tmp, tag):
    cmd = ["/usr/bin/python3", os.path.join(a.ref, "pytorch_ref.py"), "--model", a.model, "--mode", mode, "--data", "fashion",
           "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--threads", str(a.threads), "--seed", "1"]
    if a.train_limit:
        cmd += ["--train-limit", str(a.train_limit)]
    path = os.path.join(tmp, tag + ".log")
    code, rss = run(cmd, path)
    line = next((l for l in open(path) if l.startswith("RESULT_JSON ")), None)
    err = open(path + ".err").read()
    if code != 0 and "implemented for" in err:  # e.g. "--mode qat/ptq are implemented for --model seed-cnn only"
        return None
    if code != 0 or line is None:
        sys.exit("bench-train: the PyTorch reference failed:\n" + err[-2000:])
    res = json.loads(line[len("RESULT_JSON "):])
    acc = res.get("int8_test_acc", res["per_epoch"][-1]["test_acc"])
    return {"ips": res["train_img_per_s_mean"], "acc": acc, "rss": rss}


def main():
    import argparse
    ap = argparse.ArgumentParser(prog="bench-train")
    ap.add_argument("--cli", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--strategy", choices=sorted(STRATEGIES), default="fp32")
    ap.add_argument("--format", default=None)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    if a.format is None:
        a.format = "int8" if a.strategy == "qat" else "bf16"
    mode = STRATEGIES[a.strategy][1]
    label = a.strategy if a.strategy == "fp32" else "%s %s" % (a.strategy, a.format)
    rows = []
    no_reference = False  # the reference lacks this mode for this model (PyTorch QAT: seed-cnn only)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, a.rounds + 1):
            row = {}
            print("round %d/%d: QuantScope %s %s ..." % (r, a.rounds, a.model, label), file=sys.stderr, flush=True)
            row["qs"] = quantscope(a, a.strategy, tmp, "qs_%d" % r)
            if a.strategy != "fp32":
                print("round %d/%d: QuantScope %s fp32 ..." % (r, a.rounds, a.model), file=sys.stderr, flush=True)
                row["own"] = quantscope(a, "fp32", tmp, "own_%d" % r)
            if not no_reference:
                print("round %d/%d: PyTorch %s --mode %s ..." % (r, a.rounds, a.model, mode), file=sys.stderr, flush=True)
                row["pt"] = pytorch(a, mode, tmp, "pt_%d" % r)
                if row["pt"] is None:
                    no_reference = True
                    if a.strategy == "fp32":
                        sys.exit("bench-train: the PyTorch reference has no --mode fp32 for %s" % a.model)
                    print("bench-train: pytorch_ref.py implements --mode %s for seed-cnn only; %s %s is compared with "
                          "QuantScope's own FP32 alone" % (mode, a.model, label), file=sys.stderr, flush=True)
            rows.append(row)
            q = row["qs"]
            text = "round %d: QuantScope %s %s img/s (acc %.2f %%, peak %.0f MB)" % (
                r, label, format(round(q["ips"]), ","), 100 * q["acc"], q["rss"])
            if row.get("pt"):
                p = row["pt"]
                text += " | PyTorch %s %s img/s (acc %.2f %%, peak %.0f MB) | ratio %.2fx" % (
                    mode, format(round(p["ips"]), ","), 100 * p["acc"], p["rss"], q["ips"] / p["ips"])
            if "own" in row:
                o = row["own"]
                text += " | own fp32 %s img/s (acc %.2f %%, peak %.0f MB), %.2fx own fp32" % (
                    format(round(o["ips"]), ","), 100 * o["acc"], o["rss"], q["ips"] / o["ips"])
            print(text)
    med = lambda f: statistics.median(f(r) for r in rows)
    if no_reference:
        summary = "%s %s: no PyTorch %s reference for this model" % (a.model, label, mode)
    else:
        summary = "%s %s: QuantScope/PyTorch(%s) %.2fx" % (a.model, label, mode, med(lambda r: r["qs"]["ips"] / r["pt"]["ips"]))
    if a.strategy != "fp32":
        summary += ", QuantScope/own fp32 %.2fx" % med(lambda r: r["qs"]["ips"] / r["own"]["ips"])
    if no_reference:
        summary += "; peak memory %.0f MB (median of %d round(s))" % (med(lambda r: r["qs"]["rss"]), len(rows))
    else:
        summary += "; peak memory %.0f MB against PyTorch's %.0f MB (median of %d round(s))" % (
            med(lambda r: r["qs"]["rss"]), med(lambda r: r["pt"]["rss"]), len(rows))
    print(summary)


if __name__ == "__main__":
    main()
