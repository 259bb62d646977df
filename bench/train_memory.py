"""Peak memory of training by method (lora, full, head, and qlora when bitsandbytes is installed), of LoRA
on the top 3 layers with the frozen layers' outputs cached (the cache is held in memory), and of lora and qlora
with and without gradient checkpointing (qlora's default is on, the others' off), and of lora with the
checkpoint's own dropout (textlora's default is none).

    python bench/train_memory.py --max-train-samples 2000      # ~10 minutes
    python bench/train_memory.py --data ../shared/datasets/imdb --max-length 512 --batch-size 16 \
        --max-train-samples 320 --max-eval-samples 200 \
        --only lora "lora + gradient checkpointing" "lora, the checkpoint's dropout"   # long texts, ~8 minutes

Each variant trains in its own fresh process on the same subset (emotion by default) for one epoch; the peak RSS
(VmHWM) is what that process's manifest records. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "emotion")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=SHARED)
    p.add_argument("--max-train-samples", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256, help="tokens per text (model.max_length)")
    p.add_argument("--max-eval-samples", type=int, default=None, help="sample validation and test too")
    p.add_argument("--only", nargs="+", default=None, metavar="VARIANT", help="run these variants only")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every variant, e.g. train.eval_batch_size=128")
    args = p.parse_args()
    variants = {m: [m] for m in ["lora", "full", "head"]}
    variants["lora top_layers=3 (cached)"] = ["lora", "lora.top_layers=3"]
    variants["lora + gradient checkpointing"] = ["lora", "train.gradient_checkpointing=true"]
    variants["lora, the checkpoint's dropout"] = ["lora", "model.dropout=null"]  # 0.1 in MiniLM; ours is 0
    if importlib.util.find_spec("bitsandbytes"):
        variants["qlora"] = ["qlora"]  # gradient checkpointing on by default
        variants["qlora without gradient checkpointing"] = ["qlora", "train.gradient_checkpointing=false"]
    if args.only:
        unknown = sorted(set(args.only) - set(variants))
        if unknown:
            p.error(f"unknown variant(s) {unknown}; expected some of {list(variants)}")
        variants = {name: variants[name] for name in args.only}
    evals = ["--max-eval-samples", str(args.max_eval_samples)] if args.max_eval_samples else []
    results = {}
    for name, (method, *extra) in variants.items():
        out = os.path.join(tempfile.mkdtemp(), "run")
        cmd = [sys.executable, "-m", "textlora.cli", "train", "--data", args.data, "--method", method, "--out", out,
               "--epochs", "1", "--batch-size", str(args.batch_size), "--max-train-samples",
               str(args.max_train_samples), *evals, "--quiet", "train.eval_base=false",
               f"model.max_length={args.max_length}", *args.set, *extra]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            results[name] = {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
            continue
        manifest = json.load(open(os.path.join(out, "manifest.json")))
        metrics = json.load(open(os.path.join(out, "metrics.json")))
        results[name] = {"peak_rss_mb": round(manifest.get("peak_rss_mb") or 0, 1),
                           "trainable_params": manifest["params"]["trainable"],
                           "train_examples_per_s": round(manifest["train_examples_per_s"], 1),
                           "test_accuracy": round(metrics["test"]["accuracy"], 4)}
    print(json.dumps({"bench": "train_memory", "data": os.path.basename(os.path.normpath(args.data)),
                      "train_examples": args.max_train_samples, "batch_size": args.batch_size,
                      "max_length": args.max_length, **({"set": args.set} if args.set else {}), "methods": results}))


if __name__ == "__main__":
    main()
