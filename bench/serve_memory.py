"""Memory of serving 4 LoRA runs on one shared base vs 4 separately loaded models (peak RSS of each).

    python bench/serve_memory.py                      # trains 4 quick MiniLM runs if needed
    python bench/serve_memory.py --runs a=runs/x b=runs/y c=runs/z d=runs/w

Each side runs in a fresh child process: `shared` loads the runs with the server's loader
(`textlora.serve.Registry`: one base, four adapters and heads), `separate` loads each run with
`textlora.load` (its own base with the adapter merged). Both then classify the same 64 texts with
every run, and report their peak resident set size (VmHWM). `one` serves only the first run (the
cost of any server), `imports` only imports the libraries. Prints one JSON line; `per_extra_run_mb_*`
is what each run beyond the first adds.
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
    p.add_argument("--child", choices=["shared", "separate", "one", "imports"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args.child, args.runs)
    specs = args.runs or [f"{name}={ensure_run(ROOT / 'runs' / 'bench' / name, data, 300, **over)}"
                          for name, (data, over) in QUICK_RUNS.items()]
    sides = {mode: _run_child(mode, specs) for mode in ("imports", "one", "shared", "separate")}
    peak = {m: sides[m]["peak_rss_mb"] for m in sides}
    extra = len(specs) - 1
    print(json.dumps({
        "bench": "serve_memory", "runs": len(specs),
        "shared_peak_rss_mb": peak["shared"], "separate_peak_rss_mb": peak["separate"],
        "saved_peak_mb": round(peak["separate"] - peak["shared"], 1),
        "one_run_peak_rss_mb": peak["one"], "imports_only_rss_mb": peak["imports"],
        "per_extra_run_mb_shared": round((peak["shared"] - peak["one"]) / max(extra, 1), 1),
        "per_extra_run_mb_separate": round((peak["separate"] - peak["one"]) / max(extra, 1), 1),
    }))


def _run_child(mode: str, specs: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--runs", *specs],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(mode: str, specs: list[str]) -> None:
    import peft  # noqa: F401 - the same libraries on every side, so `imports` is the common floor
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from textlora.predict import Predictor
    from textlora.serve import Registry, RunSpec

    with gzip.open(SHARED / "emotion" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(64))]
    parsed = [RunSpec.parse(s) for s in specs]
    if mode in ("shared", "one"):
        parsed = parsed if mode == "shared" else parsed[:1]
        reg = Registry.load(parsed)
        for spec in parsed:
            reg.scores(spec.name, texts)
    elif mode == "separate":
        models = [Predictor.load(spec.path) for spec in parsed]
        for clf in models:
            clf.predict_proba(texts)
    print(json.dumps({"mode": mode, "peak_rss_mb": round(_rss_kib("VmHWM") / 1024, 1)}))


def _rss_kib(field: str) -> int:
    """VmHWM (peak RSS) of this process, KiB. Not ru_maxrss: Linux carries it over from the
    parent through fork and exec, so a child of a big parent would report the parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: a peak either way


if __name__ == "__main__":
    main()
