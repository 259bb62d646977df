"""What averaging finished runs would buy: accuracy of every subset of runs (and optionally TF-IDF).

    python bench/ensemble.py RUN RUN [RUN ...] [--tfidf]

Reads each run folder's predictions.npz (the validation and test logits `textlora train` saves), checks
that the runs scored the same texts with the same labels, averages the members' softmax probabilities
over every subset of two or more, and prints one JSON line: each member's and each subset's validation
and test accuracy. `--tfidf` adds textlora's TF-IDF + logistic regression baseline, fitted on the first
run's training split. Single-label runs only. A diagnostic for the results table ("what was tried"):
textlora trains, saves and serves one model per run.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from textlora.metrics import softmax

SPLITS = ("validation", "test")


def load_member(run: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(labels, probabilities by split, gold label ids by split) of one finished single-label run."""
    labels = json.loads((run / "labels.json").read_text())
    if labels.get("multi_label"):
        raise SystemExit(f"{run} is a multi-label run; this bench averages single-label runs only.")
    with np.load(run / "predictions.npz") as z:
        probs = {s: softmax(z[f"{s}_logits"]) for s in SPLITS}
        gold = {s: z[f"{s}_labels"] for s in SPLITS}
    return labels["labels"], probs, gold


def tfidf_member(run: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The TF-IDF baseline fitted on `run`'s data section, as a member."""
    from textlora.baselines import fit_tfidf_logreg
    from textlora.config import RunConfig
    from textlora.data.splits import load_dataset

    data = load_dataset(RunConfig.from_yaml(run / "config.yaml").data)
    fit = fit_tfidf_logreg(data)
    gold = {s: np.asarray(data.label_map.encode(data.splits()[s].labels)) for s in SPLITS}
    return list(data.label_map.labels), {s: np.exp(fit.logits[s]) for s in SPLITS}, gold


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders scored on the same splits")
    p.add_argument("--tfidf", action="store_true", help="add the TF-IDF baseline fitted on the first run's data")
    args = p.parse_args()
    members = {str(r): load_member(r) for r in args.runs}
    if args.tfidf:
        members["tfidf_logreg"] = tfidf_member(args.runs[0])
    labels, _, gold = next(iter(members.values()))
    for name, (lab, _, g) in members.items():
        if lab != labels or any(not np.array_equal(g[s], gold[s]) for s in SPLITS):
            raise SystemExit(f"{name} was scored on other texts or labels than {next(iter(members))}; "
                             "ensemble runs made from the same data section (path, samples, seed).")

    def accuracy(names: tuple[str, ...]) -> dict[str, float]:
        return {s: round(float((sum(members[n][1][s] for n in names).argmax(1) == gold[s]).mean()), 4)
                for s in SPLITS}

    rows = [{"members": list(c), **accuracy(c)}
            for k in range(1, len(members) + 1) for c in itertools.combinations(members, k)]
    print(json.dumps({"bench": "ensemble", "texts": {s: len(gold[s]) for s in SPLITS}, "rows": rows}))


if __name__ == "__main__":
    main()
