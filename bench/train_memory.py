"""Peak memory of training by method (lora, full, head, and qlora when bitsandbytes is installed), of LoRA
on the top 3 layers with the frozen layers' outputs cached (the cache is held in memory), and of lora and qlora
with and without gradient checkpointing (qlora's default is on, the others' off).

    python bench/train_memory.py --max-train-samples 2000      # ~8 minutes

Each method trains in its own fresh process on the same emotion subset for one epoch; the peak RSS
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
    args = p.parse_args()
    variants = {m: [m] for m in ["lora", "full", "head"]}
    variants["lora top_layers=3 (cached)"] = ["lora", "lora.top_layers=3"]
    variants["lora + gradient checkpointing"] = ["lora", "train.gradient_checkpointing=true"]
    if importlib.util.find_spec("bitsandbytes"):
        variants["qlora"] = ["qlora"]  # gradient checkpointing on by default
        variants["qlora without gradient checkpointing"] = ["qlora", "train.gradient_checkpointing=false"]
    results = {}
    for name, (method, *extra) in variants.items():
        out = os.path.join(tempfile.mkdtemp(), "run")
        cmd = [sys.executable, "-m", "textlora.cli", "train", "--data", args.data, "--method", method, "--out", out,
               "--epochs", "1", "--batch-size", str(args.batch_size), "--max-train-samples",
               str(args.max_train_samples), "--quiet", "train.eval_base=false", *extra]
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
    print(json.dumps({"bench": "train_memory", "train_examples": args.max_train_samples,
                      "batch_size": args.batch_size, "methods": results}))


if __name__ == "__main__":
    main()
