"""How well `textlora audit` finds label errors: flip a share of emotion's training labels at random, audit, and
count the flipped rows among the top suspects; then audit the real data and list its top suspects.

    nice -n 10 python bench/audit_flip.py --out /tmp/exp/audit_flip                 # 5% flipped, seed 0, 5 folds
    nice -n 10 python bench/audit_flip.py --out /tmp/exp/audit_flip --audits flip,real  # and the real data
    nice -n 10 python bench/audit_flip.py --out /tmp/x --max-train-samples 4000 model.max_length=64

Each flipped row gets a different class drawn uniformly (numpy default_rng(seed)). "Top 5%" is the 5% of training
rows with the lowest label quality (as many rows as were flipped, so precision and recall are equal there); the
rows cleanlab flags (a set of its own size) are scored too. One JSON line per audit to stdout; with `--audits flip,real` the
top 20 suspects of the real data go to OUT/real_top20.md as a Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from textlora.auditing import audit, top_suspects  # noqa: E402
from textlora.config import RunConfig, parse_overrides  # noqa: E402

EMOTION = REPO.parent / "shared" / "datasets" / "emotion"


def flip(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], np.ndarray]:
    """A copy of `rows` with round(fraction * n) labels, chosen at random, changed to another random class."""
    rng = np.random.default_rng(seed)
    classes = sorted({r["label"] for r in rows})
    picked = np.sort(rng.choice(len(rows), size=round(fraction * len(rows)), replace=False))
    out = [dict(r) for r in rows]
    for i in picked:
        others = [c for c in classes if c != rows[i]["label"]]
        out[i]["label"] = others[rng.integers(len(others))]
    return out, picked


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_flipped(folder: Path, fraction: float, seed: int) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rows, picked = flip(read_jsonl(EMOTION / "train.jsonl.gz"), fraction, seed)
    with gzip.open(folder / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    for split in ("validation", "test"):
        shutil.copyfile(EMOTION / f"{split}.jsonl.gz", folder / f"{split}.jsonl.gz")
    return picked


def score(result, flipped: set[int], fraction: float) -> dict:
    n = len(result.quality)
    top = set(top_suspects(result, round(fraction * n)))
    flagged = {s.index for s in result.suspects}
    hit_top, hit_flagged = len(top & flipped), len(flagged & flipped)
    return {"rows": n, "flipped": len(flipped), "top_n": len(top),
            "top_precision": hit_top / len(top), "top_recall": hit_top / len(flipped),
            "flagged": len(flagged), "flagged_precision": hit_flagged / max(len(flagged), 1),
            "flagged_recall": hit_flagged / len(flipped)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--method", default="head")
    p.add_argument("--max-train-samples", type=int, help="audit a stratified sample of the training rows")
    p.add_argument("--audits", default="flip", help="comma-separated: flip (the flipped data), real (the real data)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    data = args.out / "data_flipped"
    cfg = RunConfig().with_overrides({"data.path": str(data), "data.max_train_samples": args.max_train_samples,
                                      "model.method": args.method, **parse_overrides(args.overrides)})
    audits = set(args.audits.split(","))
    if "flip" in audits:
        run_flipped(cfg, args)
    if "real" in audits:
        run_real(cfg, args)


def run_flipped(cfg: RunConfig, args: argparse.Namespace) -> None:
    flipped = write_flipped(Path(cfg.data.path), args.fraction, args.seed)
    t0 = time.time()
    result = audit(cfg, args.out / "audit_flipped", folds=args.folds)
    # the audit's rows are the file's rows in order unless sampled: map flipped file lines to audit indices
    line_of = [int(s.split()[-1]) - 1 for s in _row_names(cfg)]
    flipped_lines = set(flipped.tolist())
    flipped_idx = {i for i, line in enumerate(line_of) if line in flipped_lines}
    print(json.dumps({"bench": "audit_flip", "fraction": args.fraction, "seed": args.seed, "folds": args.folds,
                      "method": args.method, **score(result, flipped_idx, args.fraction),
                      "cv_accuracy": f"{result.cv['accuracy_mean']:.4f} ± {result.cv['accuracy_std']:.4f}",
                      "seconds": round(time.time() - t0, 1)}), flush=True)


def run_real(cfg: RunConfig, args: argparse.Namespace) -> None:
    real = cfg.with_overrides({"data.path": str(EMOTION)})
    t0 = time.time()
    r = audit(real, args.out / "audit_real", folds=args.folds)
    print(json.dumps({"bench": "audit_real", "rows": len(r.quality), "flagged": len(r.suspects),
                      "cv_accuracy": f"{r.cv['accuracy_mean']:.4f} ± {r.cv['accuracy_std']:.4f}",
                      "cv_f1_macro": f"{r.cv['f1_macro_mean']:.4f} ± {r.cv['f1_macro_std']:.4f}",
                      "seconds": round(time.time() - t0, 1)}), flush=True)
    lines = ["| # | row | text | given | suggested | score |", "|---|---|---|---|---|---|"]
    lines += [f"| {s.rank} | {s.row_name} | {s.text.replace('|', '/')} | {s.given} | {s.suggested} | {s.score:.4f} |"
              for s in r.suspects[:20]]
    (args.out / "real_top20.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _row_names(cfg: RunConfig) -> list[str]:
    from textlora.data.splits import load_dataset

    return load_dataset(cfg.data).train.row_names


if __name__ == "__main__":
    main()
