"""Run the reference experiments of ../shared/SEEDS.md from configs/ and write our figures beside theirs.

    python bench/seeds.py                            # every config at the sizes in FULL (about 2 hours on 2 cores)
    python bench/seeds.py s1_emotion_lora s4_emotion_head   # some of them
    python bench/seeds.py --quick                    # 300 train / 200 eval rows, 1 epoch: a smoke check (minutes)
    python bench/seeds.py s4_emotion_lora model.name=/path/to/gpt2   # key=value overrides apply to each

Each experiment trains in its own process (`textlora train --config configs/<name>.yaml`), so its peak
RSS is its own. A finished run folder with the same resolved config is reused, also across names:
s4_emotion_lora and s5_emotion_base_vs_lora resolve to the same run as s1_emotion_lora. The table goes
to bench/RESULTS.md between the `seeds` markers (full mode only) and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from textlora.config import RunConfig, parse_overrides  # noqa: E402
from textlora.run_folder import is_complete, read_json  # noqa: E402


@dataclass(frozen=True)
class Seed:
    theirs: str
    """Their figure, as ../shared/SEEDS.md reports it."""
    metrics: tuple[str, ...]
    """Our test metrics to show, first the headline."""
    goal: str
    """The issue's target for our figure."""


SEEDS = {
    "s1_emotion_lora": Seed("accuracy 0.89 (DistilBERT)", ("accuracy", "f1_macro"), "accuracy >= 0.93"),
    "s2_goemotions_lora": Seed("~54% accuracy (DistilBERT LoRA); paper macro-F1 0.46 (BERT-base)",
                               ("f1_macro", "single_label_accuracy", "f1_micro"),
                               "macro-F1 >= 0.46, single-label accuracy >= 0.589"),
    "s2_goemotions_full": Seed("58.9% accuracy (DistilBERT full)", ("f1_macro", "single_label_accuracy", "f1_micro"),
                               "macro-F1 >= 0.46, single-label accuracy >= 0.589"),
    "s2_dbpedia_lora": Seed("99.9% (DistilBERT LoRA), 85% (MiniLM LoRA r=8)", ("accuracy", "f1_macro"),
                            "accuracy >= 0.99"),
    "s3_imdb_1000": Seed("accuracy 90.80%, P 91.63%, R 89.80%, F1 90.71% (DistilBERT)",
                         ("accuracy", "precision_macro", "recall_macro", "f1_macro"), "accuracy >= 0.908"),
    "s3_imdb_full": Seed("92.8% (DistilBERT model card)", ("accuracy", "f1_macro"), "accuracy >= 0.92"),
    "s4_emotion_head": Seed("0.58 head only (GPT-2)", ("accuracy", "f1_macro"), "above theirs"),
    "s4_emotion_lora": Seed("0.93 LoRA (GPT-2)", ("accuracy", "f1_macro"), "accuracy >= 0.93"),
    "s4_emotion_qlora": Seed("0.93 QLoRA (GPT-2), less memory than LoRA", ("accuracy", "f1_macro"),
                             "within 0.5 points of LoRA, lower peak RSS"),
    "s5_emotion_base_vs_lora": Seed("eval loss 1.891 -> 1.004 (BERT-base)", ("loss", "accuracy"),
                                    "loss below the base's"),
}

FULL: dict[str, dict[str, object]] = {
    "s2_goemotions_lora": {"train.epochs": 1, "train.eval_base": False},
    "s2_goemotions_full": {"train.eval_base": False},  # the config's 3 epochs (~40 min)
    "s2_dbpedia_lora": {"train.eval_base": False},  # all 27,000 rows, 2 epochs (35 min)
    "s3_imdb_1000": {"train.eval_base": False},
    "s3_imdb_full": {"model.max_length": 256, "train.epochs": 2, "train.eval_base": False},  # ~75 min alone (Zen 4)
}
"""Per-experiment changes that fit a session on 2 CPU cores; the table's train-size column says so."""

SKIPPED = {
    "s2_goemotions_full": "not run by default: full fine-tuning trains at ~62 examples/s here, 3 epochs of 43,410 "
                          "rows take ~37 min; name it to run it",
    "s3_imdb_full": "not run by default: 22,500 reviews at 256 tokens, 2 epochs, and 25,000 test reviews take ~75 min "
                    "alone on a Zen 4 machine; name it to run it",
}
"""Experiments left out of a run of all of them on 2 CPU cores, and why; a finished run of one (named once) is shown."""

COMMON = {"train.checkpoint_every": 0}
QUICK = {"data.max_train_samples": 300, "data.max_eval_samples": 200, "train.epochs": 1}


def resolved(name: str, overrides: dict[str, object]) -> RunConfig:
    """configs/<name>.yaml with the data path made absolute and `overrides` applied."""
    cfg = RunConfig.from_yaml(REPO / "configs" / f"{name}.yaml")
    return cfg.with_overrides({"data.path": str((REPO / cfg.data.path).resolve()), **overrides})


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs train the same run (everything but the output folder equal)."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("out")
        d["data"]["path"] = str((REPO / d["data"]["path"]).resolve())  # relative to the repository root
    return da == db


def finished(out: Path, cfg: RunConfig) -> bool:
    """Whether `out` holds a finished run of `cfg`."""
    return is_complete(out) and same_run(RunConfig.from_yaml(out / "config.yaml"), cfg)


def run_seed(name: str, cfg: RunConfig, out: Path, done: dict[str, tuple[RunConfig, Path]]) -> tuple[Path, str]:
    """Train `cfg` into `out` in a subprocess unless an equal config already has a finished run.
    Returns the run folder and a note."""
    for other, (other_cfg, other_out) in done.items():
        if same_run(cfg, other_cfg):
            return other_out, f"same run as {other}"
    if finished(out, cfg):
        return out, ""
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg_file = out.parent / f"{name}.config.yaml"
    cfg.with_overrides({"out": str(out)}).to_yaml(cfg_file)
    cmd = [sys.executable, "-m", "textlora.cli", "train", "--config", str(cfg_file), "--overwrite", "--no-resume"]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return out, ""


def folder_mb(path: Path) -> float:
    """Size on disk of a file or folder in MB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def summary(name: str, run: Path, note: str) -> dict:
    """The row of one experiment, from its run folder."""
    m, manifest = read_json(run / "metrics.json"), read_json(run / "manifest.json")
    cfg = RunConfig.from_yaml(run / "config.yaml")
    weights = {"lora": "adapter", "qlora": "adapter", "head": "head.safetensors", "full": "model"}[cfg.model.method]
    splits = manifest["data"]["splits"]
    seed = SEEDS[name]
    return {
        "experiment": name, "theirs": seed.theirs, "goal": seed.goal, "method": cfg.model.method,
        "test": {k: m["test"].get(k) for k in seed.metrics},
        "base_test": {k: m.get("base", {}).get("test", {}).get(k) for k in seed.metrics},
        "train_rows": splits["train"]["rows"], "test_rows": splits["test"]["rows"],
        "sampled": bool(cfg.data.max_train_samples or cfg.data.max_eval_samples),
        "epochs": cfg.train.epochs, "max_length": cfg.model.max_length,
        "wall_s": round(manifest["wall_seconds"]), "peak_rss_mb": round(manifest["peak_rss_mb"]),
        "trainable_params": manifest["params"]["trainable"], "weights_on_disk_mb": round(folder_mb(run / weights), 2),
        "weights": weights, "run": str(run), "note": note,
    }


def markdown(rows: list[dict]) -> str:
    """The RESULTS.md table."""
    lines = ["| experiment | their figure | ours (test) | untrained base | goal | train size | wall time | "
             "peak RSS | trainable params | saved weights |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['experiment']} | {r['theirs']} | {r['skipped']} | | {r['goal']} | | | | | |")
            continue
        ours = ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items() if v is not None)
        base = ", ".join(f"{k} {v:.4f}" for k, v in r["base_test"].items() if v is not None) or "-"
        size = (f"{r['train_rows']:,} train / {r['test_rows']:,} test{' (sampled)' if r['sampled'] else ''}, "
                f"{r['epochs']} ep, {r['max_length']} tok")
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['experiment']}{note} | {r['theirs']} | {ours} | {base} | {r['goal']} | {size} | "
                     f"{r['wall_s'] / 60:.1f} min | {r['peak_rss_mb']:,} MB | {r['trainable_params']:,} | "
                     f"{r['weights']} {r['weights_on_disk_mb']} MB |")
    return "\n".join(lines)


def write_results(table: str, command: str, path: Path = REPO / "bench" / "RESULTS.md") -> None:
    """Put `table` between the seeds markers of RESULTS.md (appended the first time)."""
    start, end = "<!-- seeds:start -->", "<!-- seeds:end -->"
    block = f"{start}\n```bash\n{command}\n```\n\n{table}\n{end}"
    text = path.read_text(encoding="utf-8")
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Reference experiments (issue 4, ../shared/SEEDS.md)\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"configs to run (default: all): {', '.join(SEEDS)}")
    p.add_argument("--quick", action="store_true", help="smoke check on a few hundred rows, 1 epoch")
    p.add_argument("--out", default=str(REPO / "runs" / "seeds"), help="folder of the run folders")
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args, rest = p.parse_known_args()
    unknown = [n for n in args.names if "=" not in n and n not in SEEDS]
    if unknown:
        p.error(f"unknown experiments {unknown}; choose from {list(SEEDS)}")
    names = [n for n in args.names if n in SEEDS] or list(SEEDS)
    user = parse_overrides([r for r in rest + args.names if "=" in r])
    out_root = Path(args.out) / ("quick" if args.quick else "full")
    done: dict[str, tuple[RunConfig, Path]] = {}
    rows = []
    for name in SEEDS:  # in table order, so a reused run is always the earlier one
        if name not in names:
            continue
        cfg = resolved(name, {**COMMON, **(QUICK if args.quick else FULL.get(name, {})), **user})
        if name in SKIPPED and name not in args.names and not finished(out_root / name, cfg):
            rows.append({"experiment": name, "theirs": SEEDS[name].theirs, "goal": SEEDS[name].goal,
                         "skipped": SKIPPED[name]})
            continue
        run, note = run_seed(name, cfg, out_root / name, done)
        done.setdefault(name, (cfg, run))
        rows.append(summary(name, run, note))
    table = markdown(rows)
    print(table, file=sys.stderr)
    print(json.dumps({"bench": "seeds", "quick": args.quick, "rows": rows}))
    if not args.quick and not args.no_write:
        write_results(table, "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))


if __name__ == "__main__":
    main()
