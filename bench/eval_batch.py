"""Inference batch size: speed and transient memory of a trained run's forward passes at several batch sizes.

    python bench/eval_batch.py --run runs/emotion-lora                  # ~2 minutes; 2000 emotion test texts

Each batch size runs in its own fresh process (so one's freed memory cannot serve the next), `--rounds` times,
in turn: a warm-up over 300 texts, then every text timed once. `peak_delta_mb` is how far the process's peak RSS
(VmHWM, reset just before) rose above its resident size while predicting: the activations and what the
allocator kept of them. Prints one JSON line with each size's median examples/s and peak delta.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "emotion", "test.jsonl.gz")


def one(run: str, texts_path: str, batch_size: int) -> dict:
    """Predict every text of `texts_path` with `run` at `batch_size`, in this process; examples/s and peak delta."""
    from textlora.memory import peak_rss_mb, rss_mb
    from textlora.predict import Predictor

    texts = [json.loads(line)["text"] for line in gzip.open(texts_path, "rt", encoding="utf-8")]
    predictor = Predictor.load(run, batch_size=batch_size)
    predictor.predict_proba(texts[:300])
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    resident = rss_mb()
    start = time.perf_counter()
    predictor.predict_proba(texts)
    seconds = time.perf_counter() - start
    return {"examples_per_s": len(texts) / seconds, "peak_delta_mb": round(peak_rss_mb() - resident)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/emotion-lora")
    p.add_argument("--texts", default=SHARED, help="a JSONL.gz file with a text field")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.run, args.texts, args.child)))
        return
    results: dict[int, list[dict]] = {b: [] for b in args.batch_sizes}
    for _ in range(args.rounds):
        for b in args.batch_sizes:
            r = subprocess.run([sys.executable, __file__, "--run", args.run, "--texts", args.texts, "--child", str(b)],
                               capture_output=True, text=True, check=True)
            results[b].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps({"bench": "eval_batch", "run": args.run, "texts": os.path.basename(args.texts),
                      "rounds": args.rounds,
                      "batch_sizes": {b: {"examples_per_s": round(statistics.median(x["examples_per_s"] for x in rs), 1),
                                          "peak_delta_mb": statistics.median(x["peak_delta_mb"] for x in rs),
                                          "examples_per_s_each": [round(x["examples_per_s"], 1) for x in rs]}
                                      for b, rs in results.items()}}))


if __name__ == "__main__":
    main()
