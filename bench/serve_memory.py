"""Memory of serving 4 LoRA runs on one shared base vs 4 separately loaded models (peak RSS of each).

    python bench/serve_memory.py                      # trains 4 quick MiniLM runs if needed
    python bench/serve_memory.py --runs a=runs/x b=runs/y c=runs/z d=runs/w

Each side runs in a fresh child process: `shared` loads the runs with the server's loader
(`textlora.serve.Registry`: one base, four adapters and heads), `separate` loads each run with
`textlora.load` (its own base with the adapter merged). Both then classify the same 64 texts with
every run, and report their peak resident set size (ru_maxrss). `imports` is a child that only
imports the same libraries: the interpreter + torch floor that both sides pay. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
from pathlib import Path

from _runs import SHARED, ensure_run

ROOT = Path(__file__).resolve().parents[1]
QUICK_RUNS = {  # name -> (dataset, overrides): four runs (two tasks, two adapter shapes) on the same MiniLM
    "emotion": ("emotion", {}),
    "topic": ("dbpedia14", {}),
    "emotion-r8": ("emotion", {"lora.r": 8, "train.seed": 7}),
    "topic-r8": ("dbpedia14", {"lora.r": 8, "train.seed": 7}),
}
"""imdb is left out: its JSONL holds U+0085 inside texts, which `data/io.py` (str.splitlines) splits on."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", metavar="NAME=PATH", help="runs on one base (default: train 4 quick ones)")
    p.add_argument("--child", choices=["shared", "separate", "imports"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args.child, args.runs)
    specs = args.runs or [f"{name}={ensure_run(ROOT / 'runs' / 'bench' / name, data, 300, **over)}"
                          for name, (data, over) in QUICK_RUNS.items()]
    peaks = {mode: _run_child(mode, specs) for mode in ("imports", "shared", "separate")}
    floor = peaks["imports"]
    print(json.dumps({
        "bench": "serve_memory", "runs": len(specs),
        "shared_peak_rss_mb": peaks["shared"], "separate_peak_rss_mb": peaks["separate"],
        "imports_only_rss_mb": floor,
        "saved_mb": round(peaks["separate"] - peaks["shared"], 1),
        "model_memory_ratio": round((peaks["separate"] - floor) / max(peaks["shared"] - floor, 1e-9), 2),
    }))


def _run_child(mode: str, specs: list[str]) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--runs", *specs],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _child(mode: str, specs: list[str]) -> None:
    import peft  # noqa: F401 - the same libraries on every side, so `imports` is the common floor
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from textlora.predict import Predictor
    from textlora.serve import Registry, RunSpec

    with gzip.open(SHARED / "emotion" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(64))]
    parsed = [RunSpec.parse(s) for s in specs]
    if mode == "shared":
        reg = Registry.load(parsed)
        for spec in parsed:
            reg.scores(spec.name, texts)
    elif mode == "separate":
        models = [Predictor.load(spec.path) for spec in parsed]
        for clf in models:
            clf.predict_proba(texts)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"mode": mode, "peak_rss_mb": round(peak_kb / 1024, 1)}))


if __name__ == "__main__":
    main()
