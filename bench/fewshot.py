"""The few-label ladder: every rung at N training rows per class, on emotion and DBpedia-14, over seeds.

    python bench/fewshot.py                                    # the full grid (see --help for its axes)
    python bench/fewshot.py --datasets emotion --shots 8 --seeds 0 --rungs embed,setfit   # one corner
    python bench/fewshot.py --table-only                       # render the table from the finished cells

Each cell (data set, shots, seed, rung) trains on `data.shots_per_class=N` rows drawn with `data.shots_seed=seed`;
validation and test are fixed seeded samples of `--eval-rows` rows (split_seed 42), the same for every cell of a
data set. Validation picks C (logistic-regression rungs) and the best epoch (transformer rungs), as the ladder does:
a real few-label user may have no such split. zero-shot uses no training rows, so it runs once per data set.
Cells run one after another in this process; the embed rung's validation/test embeddings are computed once per
data set (`cache`). One JSON line per cell goes to stdout and to `--cells` (a rerun skips the cells there); the
markdown table (mean ± std over the seeds) is printed, and written to `--md` when given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from textlora.config import DataConfig, RunConfig  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
DATASETS = {"emotion": {"path": "emotion", "pair": None, "max_length": 64},
            "dbpedia14": {"path": "dbpedia14", "pair": "title", "max_length": 128}}
"""Data set -> folder under shared/datasets, the title column put in front of the text, max_length."""
RUNGS = ("majority", "tfidf_logreg", "zero-shot", "embed", "setfit", "head", "lora", "full")


def data_config(name: str, shots: int | None, seed: int, eval_rows: int) -> DataConfig:
    spec = DATASETS[name]
    return DataConfig(path=str(SHARED / spec["path"]), text_pair_column=spec["pair"], max_eval_samples=eval_rows,
                      shots_per_class=shots, shots_seed=seed)


def run_cell(rung: str, name: str, shots: int, seed: int, args: argparse.Namespace, cache: dict) -> dict[str, Any]:
    """Train and score one rung on one draw; returns its JSON line."""
    from textlora import baselines, fewshot
    from textlora.data.splits import load_dataset

    t0 = time.time()
    cfg = data_config(name, shots, seed, args.eval_rows)
    length = DATASETS[name]["max_length"]
    if rung in baselines.BASELINES:
        res = baselines.BASELINES[rung](load_dataset(cfg))
        metrics = res.metrics
    elif rung in fewshot.FEWSHOT:
        options = fewshot.EncoderOptions(max_length=length, device=args.device, seed=seed)
        data = load_dataset(cfg)
        if rung == "embed":
            res = fewshot.embed_logreg(data, options, cache=cache.setdefault(name, {}))
        elif rung == "setfit":
            res = fewshot.setfit(data, options, fewshot.SetFitOptions(num_iterations=args.setfit_iterations,
                                                                      max_pairs=args.setfit_max_pairs))
        else:
            res = fewshot.zero_shot(data, options, cache=cache.setdefault(name, {}))
        metrics = res.metrics
    else:
        metrics = train_rung(rung, cfg, length, seed, args)
    test, val = metrics["test"], metrics["validation"]
    return {"dataset": name, "shots": shots, "seed": seed, "rung": rung, "test_accuracy": test["accuracy"],
            "test_f1_macro": test["f1_macro"], "val_accuracy": val["accuracy"], "seconds": round(time.time() - t0, 1)}


def train_rung(method: str, data: DataConfig, length: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """A transformer rung through `textlora.train` (the method's default lr; `--epochs`, batch `--batch-size`)."""
    from textlora.train import train

    cfg = RunConfig.from_dict({"data": data.__dict__, "model": {"method": method, "max_length": length},
                               "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": seed,
                                         "eval_base": False, "device": args.device},
                               "out": str(Path(args.work) / f"{data.path.rsplit('/', 1)[-1]}-{method}")})
    return train(cfg, overwrite=True, progress=False).metrics


def table(cells: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown: one row per rung, one column per (data set, shots): test accuracy mean ± std over seeds (n)."""
    names = [d for d in DATASETS if any(c["dataset"] == d for c in cells)]
    shots = sorted({c["shots"] for c in cells if c["shots"] is not None})
    cols = [(d, s) for d in names for s in shots]
    head = "| rung | " + " | ".join(f"{d} {s}/class" for d, s in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for rung in [r for r in RUNGS if any(c["rung"] == r for c in cells)]:
        row = []
        for d, s in cols:
            accs = [c["test_accuracy"] for c in cells if c["rung"] == rung and c["dataset"] == d
                    and (c["shots"] == s or rung == "zero-shot")]
            row.append(_mean_std(accs))
        lines.append(f"| {rung} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def header(args: argparse.Namespace) -> str:
    """What the table measured, with the command that wrote it."""
    lengths = ", ".join(f"{d} {v['max_length']}" for d, v in DATASETS.items())
    return (f"# Few-label ladder (test accuracy, mean ± std over seeds; n = seeds finished)\n\n"
            f"`python {' '.join(['bench/fewshot.py'] + sys.argv[1:])}`\n\n"
            f"- Base: the embedded all-MiniLM-L6-v2; max_length {lengths};"
            f" DBpedia-14 reads the title in front of the abstract.\n"
            f"- Training rows: N per class (data.shots_per_class), drawn with data.shots_seed = the seed.\n"
            f"- Validation and test: fixed seeded samples of {args.eval_rows} rows each (split_seed 42; DBpedia's "
            f"validation is carved from its train file first); validation picks C and the best epoch.\n"
            f"- zero-shot uses no training rows: one run per data set, shown in every column (n=1).\n"
            f"- setfit: num_iterations {args.setfit_iterations}, at most {args.setfit_max_pairs} pairs (at least one "
            f"round), 1 epoch, batch 16, lr 2e-5; head, lora: {args.epochs} epochs, batch {args.batch_size}, the "
            f"method's default lr.\n\n")


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "not run"
    if len(xs) == 1:
        return f"{xs[0]:.4f} (n=1)"
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f} (n={len(xs)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="emotion,dbpedia14")
    p.add_argument("--shots", default="8,32,128")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rungs", default=",".join(RUNGS[:-1]), help="default: every rung but full")
    p.add_argument("--eval-rows", type=int, default=1000, help="validation and test rows (a fixed seeded sample)")
    p.add_argument("--epochs", type=int, default=3, help="transformer rungs (train.epochs)")
    p.add_argument("--batch-size", type=int, default=16, help="transformer rungs (train.batch_size)")
    p.add_argument("--setfit-iterations", type=int, default=20, help="SetFit's num_iterations")
    p.add_argument("--setfit-max-pairs", type=int, default=20_000, help="cap on SetFit's pairs per cell")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="/tmp/textlora-fewshot", help="run folders of the transformer rungs")
    p.add_argument("--cells", default="/tmp/textlora-fewshot/cells.jsonl", help="finished cells (JSON lines)")
    p.add_argument("--md", default=None, help="also write the markdown table to this file (it is always printed)")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    cells_path = Path(args.cells)
    cells_path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in cells_path.read_text().splitlines()] if cells_path.is_file() else []
    if not args.table_only:
        cache: dict = {}
        key = {(c["dataset"], c["shots"], c["seed"], c["rung"]) for c in done}
        # seeds outermost, then sizes: a run cut short has the smaller sizes of both data sets, over fewer seeds
        for seed in [int(s) for s in args.seeds.split(",")]:
            for shots in [int(s) for s in args.shots.split(",")]:
                for name in args.datasets.split(","):
                    for rung in args.rungs.split(","):
                        if rung == "zero-shot" and any(k[0] == name and k[3] == rung for k in key):
                            continue  # no training rows: one run per data set
                        if (name, shots, seed, rung) in key:
                            continue
                        try:
                            cell = run_cell(rung, name, shots, seed, args, cache)
                        except Exception as e:  # one failed cell must not stop the grid
                            print(json.dumps({"dataset": name, "shots": shots, "seed": seed, "rung": rung,
                                              "error": f"{type(e).__name__}: {e}"}), flush=True)
                            continue
                        print(json.dumps(cell), flush=True)
                        with cells_path.open("a") as f:
                            f.write(json.dumps(cell) + "\n")
                        done.append(cell)
                        key.add((name, shots, seed, rung))
    md = table(done, args)
    print(md)
    if args.md:
        Path(args.md).write_text(header(args) + md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
