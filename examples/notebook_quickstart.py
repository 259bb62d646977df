"""Quickstart, as you would run it in a notebook: train from a pandas DataFrame, predict, save and reload; then
the same from a Hugging Face `datasets` folder (`save_to_disk`), which `textlora train --data` reads too.

    python examples/notebook_quickstart.py                 # 240 emotion rows, 1 epoch: about a minute
    python examples/notebook_quickstart.py --rows 2000     # more rows, better accuracy

It reads emotion from ../shared/datasets (see its README) and uses the embedded MiniLM, so it needs no network.
CI runs it (tests/test_examples.py). The data `fit` receives is written to textlora's cache (`$TEXTLORA_CACHE`,
default ~/.cache/textlora) so that the runs' config.yaml points at data that can be read again.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import pandas as pd

import textlora

EMOTION = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "emotion"
TEXTS = ["i feel wonderful today", "this makes me so angry", "i am scared of what comes next"]


def read_rows(folder: Path, split: str, n: int) -> pd.DataFrame:
    """The first `n` rows of `folder/<split>.jsonl.gz` as a DataFrame with text and label columns."""
    with gzip.open(folder / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    return pd.DataFrame(rows)


def from_dataframe(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, keep: Path,
                   settings: dict) -> list[str]:
    """Train on DataFrames, predict, save the run, reload it and check it predicts the same."""
    clf = textlora.fit(train, validation, test, **settings)  # no `out`: a temporary run folder
    predicted = clf.predict(TEXTS)
    print(f"DataFrame: test accuracy {clf.run.metrics['test']['accuracy']:.3f} (untrained base "
          f"{clf.run.metrics['base']['test']['accuracy']:.3f}); data sha256 "
          f"{clf.manifest['data']['in_memory_sha256'][:12]}")
    print(f"DataFrame: {dict(zip(TEXTS, predicted))}")
    saved = clf.save(keep, overwrite=True)
    again = textlora.load(saved)
    assert again.predict(TEXTS) == predicted, "the saved run predicts differently"
    print(f"DataFrame: saved to {saved} and reloaded: same predictions")
    return predicted


def from_datasets_folder(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, folder: Path,
                         keep: Path, settings: dict) -> None:
    """Write the same rows as a DatasetDict folder (labels as a ClassLabel) and train from that folder."""
    import datasets

    names = sorted(train["label"].unique())
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})

    def dataset(df: pd.DataFrame) -> datasets.Dataset:
        ids = df.assign(label=df["label"].map(names.index))  # ClassLabel ids; textlora reads their names back
        return datasets.Dataset.from_pandas(ids[["text", "label"]], features=features, preserve_index=False)

    datasets.DatasetDict({"train": dataset(train), "validation": dataset(validation), "test": dataset(test)}) \
        .save_to_disk(str(folder))
    # a head on the frozen body this time: the body's outputs are computed once, so epochs cost little
    clf = textlora.fit(str(folder), **{**settings, "method": "head", "epochs": 5})  # CLI: textlora train --data FOLDER
    assert clf.labels_ == names, f"labels {clf.labels_} are not the ClassLabel names {names}"
    predicted = clf.predict(TEXTS)
    print(f"datasets folder: test accuracy {clf.run.metrics['test']['accuracy']:.3f}; labels {clf.labels_}")
    saved = clf.save(keep, overwrite=True)
    assert textlora.load(saved).predict(TEXTS) == predicted, "the saved run predicts differently"
    print(f"datasets folder: saved to {saved} and reloaded: same predictions")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=EMOTION, help="a folder with train/validation/test .jsonl.gz")
    p.add_argument("--rows", type=int, default=240, help="training rows (validation and test get a quarter each)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="where to keep the two runs (default: a temporary folder)")
    args = p.parse_args(argv)

    eval_rows = max(args.rows // 4, 30)
    train, validation, test = (read_rows(args.data, s, n) for s, n in
                               (("train", args.rows), ("validation", eval_rows), ("test", eval_rows)))
    settings = {"epochs": args.epochs, "max_length": 32, "batch_size": 16, "progress": False}
    with tempfile.TemporaryDirectory(prefix="textlora-quickstart-") as tmp:
        out = args.out or Path(tmp)
        from_dataframe(train, validation, test, out / "emotion-dataframe", settings)
        from_datasets_folder(train, validation, test, Path(tmp) / "emotion-hf", out / "emotion-datasets", settings)


if __name__ == "__main__":
    main()
