"""Run the reference experiments of ../shared/SEEDS.md from configs/ and print our figures beside theirs.

    python bench/seeds.py                       # every config, full data (hours on 2 CPU cores)
    python bench/seeds.py s1_emotion_lora --quick   # 300 train / 200 eval rows, 1 epoch: a smoke check
    python bench/seeds.py s4_emotion_lora model.name=/path/to/gpt2   # key=value overrides apply to each

A skeleton: it trains (or reuses a finished run folder) and prints a Markdown table; the figures that
go into bench/RESULTS.md come from full runs, never from --quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

THEIRS = {
    "s1_emotion_lora": ("accuracy", "0.89 (DistilBERT)"),
    "s2_goemotions_full": ("single_label_accuracy", "58.9% accuracy (DistilBERT)"),
    "s2_goemotions_lora": ("single_label_accuracy", "~54% accuracy (DistilBERT)"),
    "s2_dbpedia_lora": ("accuracy", "99.9% (DistilBERT), 85% (MiniLM r=8)"),
    "s3_imdb_1000": ("accuracy", "90.80% accuracy, 90.71% F1 (DistilBERT)"),
    "s3_imdb_full": ("accuracy", "92.8% (DistilBERT model card)"),
    "s4_emotion_head": ("accuracy", "0.58 (GPT-2)"),
    "s4_emotion_lora": ("accuracy", "0.93 (GPT-2)"),
    "s4_emotion_qlora": ("accuracy", "0.93 (GPT-2)"),
    "s5_emotion_base_vs_lora": ("loss", "eval loss 1.891 -> 1.004 (BERT-base)"),
}
"""Config name -> (our test metric to show, their figure as reported)."""

QUICK = {"data.max_train_samples": 300, "data.max_eval_samples": 200, "train.epochs": 1}


def run_seed(name: str, overrides: dict[str, object], out_root: Path) -> dict:
    """Train configs/<name>.yaml with `overrides` into out_root/<name> (reused when finished); its metrics."""
    from textlora.config import RunConfig
    from textlora.run_folder import is_complete, read_json
    from textlora.train import train

    out = out_root / name
    if not is_complete(out):
        cfg = RunConfig.from_yaml(REPO / "configs" / f"{name}.yaml")
        data = str(REPO / cfg.data.path)  # the configs' data paths are relative to the repository root
        cfg = cfg.with_overrides({"data.path": data, **overrides, "out": str(out)})
        train(cfg, overwrite=True, progress=True)
    return read_json(out / "metrics.json")


def row(name: str, metrics: dict) -> str:
    key, theirs = THEIRS[name]
    ours, base = metrics["test"].get(key, float("nan")), metrics.get("base", {}).get("test", {}).get(key, float("nan"))
    return f"| {name} | test {key} {ours:.4f} (untrained base {base:.4f}) | {theirs} |"


def main() -> None:
    from textlora.config import parse_overrides

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"configs to run (default: all): {', '.join(THEIRS)}")
    p.add_argument("--quick", action="store_true", help="smoke check on a few hundred rows")
    p.add_argument("--out", default=str(REPO / "runs" / "seeds"), help="folder of the run folders")
    args, rest = p.parse_known_args()
    names = [n for n in args.names if n in THEIRS] or list(THEIRS)
    overrides = {**(QUICK if args.quick else {}), **parse_overrides([r for r in rest + args.names if "=" in r])}
    out_root = Path(args.out) / ("quick" if args.quick else "full")
    lines = ["| config | ours | theirs |", "|---|---|---|"]
    for name in names:
        lines.append(row(name, run_seed(name, overrides, out_root)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
