"""Find the split files of a dataset, carve missing splits with a seeded stratified split, subsample.

A folder holds `train.*`, and optionally `validation.*` (or `valid`, `val`, `dev`) and `test.*`.
One file stands for all the data. A Hugging Face `save_to_disk` folder (`data.hf`) is read the same way: a
DatasetDict's splits by name, a single Dataset as all the data. What is missing is carved out of train and recorded:

| present              | carved                                   |
|----------------------|------------------------------------------|
| one file             | 80/10/10 train/validation/test           |
| train + test         | 10% of train becomes validation          |
| train + validation   | 10% of train becomes test                |
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textlora.config import DataConfig
from textlora.data import hf
from textlora.data.io import Table, file_format, read_table, table_from_records
from textlora.data.labels import LabelMap
from textlora.errors import DataError

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


@dataclass
class Split:
    """One split's texts and label names, and where they came from."""

    name: str
    texts: list[str]
    labels: list[Any]
    source: str
    row_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Dataset:
    """Train, validation and test splits with the label map built from train."""

    train: Split
    validation: Split
    test: Split
    label_map: LabelMap
    files: dict[str, str]
    """sha256 of each file read, by path."""

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def describe(self) -> dict[str, Any]:
        """Sizes and sources of the splits, for the manifest."""
        return {s.name: {"rows": len(s), "source": s.source} for s in self.splits().values()}

    def overlaps(self) -> dict[str, int]:
        """Rows of each later split whose exact text occurs in an earlier one, by pair ('train/test': test rows
        whose text is also in train), for the manifest.

        Why: a text seen in training scores better than a new one, so shared texts inflate the metrics."""
        pairs = [("train", "validation"), ("train", "test"), ("validation", "test")]
        splits = self.splits()
        seen = {name: set(split.texts) for name, split in splits.items()}
        return {f"{a}/{b}": sum(t in seen[a] for t in splits[b].texts) for a, b in pairs}


def find_split_files(folder: Path) -> dict[str, Path]:
    """Map split name -> file in `folder`; raises if there is no train file or two files for one split."""
    found: dict[str, list[Path]] = {k: [] for k in SPLIT_NAMES}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or file_format(p) is None:
            continue
        stem = p.name.split(".")[0].lower()
        for split, names in SPLIT_NAMES.items():
            if stem in names:
                found[split].append(p)
    for split, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{folder}: several files for the {split} split: {[p.name for p in paths]}. "
                            "Keep one.")
    if not found["train"]:
        listing = sorted(p.name for p in folder.iterdir())[:20]
        raise DataError(f"{folder}: no train file found; expected train.csv/.tsv/.jsonl(.gz)/.json/.parquet "
                        f"(and optionally validation.* and test.*), found {listing}.")
    return {k: v[0] for k, v in found.items() if v}


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read, validate, split and subsample the data described by `cfg`.

    Raises:
        DataError: a file problem (see `read_table`), a label in validation/test unseen in
            train, or fewer than two classes.
    """
    if not cfg.path:
        raise DataError("no data given: pass --data PATH (a folder with train/validation/test files, or one file).")
    root = Path(cfg.path)
    if not root.exists():
        raise DataError(f"data path {root} not found. Pass a folder with train/validation/test files, or one "
                        "CSV/TSV/JSONL/Parquet file.")
    if hf.is_hf_folder(root):
        tables, hashed = _read_hf_folder(root, cfg)
    else:
        files = find_split_files(root) if root.is_dir() else {"train": root}
        tables = {k: read_table(p, cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.label_sep)
                  for k, p in files.items()}
        hashed = list(files.values())
    splits = {k: Split(k, t.texts, t.labels, str(t.path), t.row_names) for k, t in tables.items()}
    splits = _carve_missing(splits, cfg.split_seed)
    label_map = LabelMap.from_labels(splits["train"].labels)
    if label_map.num_labels < 2:
        raise DataError(f"the training split has only one class ({label_map.labels}); a classifier needs at least "
                        "two. Check --label-column, or add examples of the other classes.")
    for name in ("validation", "test"):
        s = splits[name]
        label_map.encode(s.labels, source=Path(s.source).name if s.row_names else s.source,
                         row_names=s.row_names or None)
    if cfg.max_train_samples:
        splits["train"] = _subsample(splits["train"], cfg.max_train_samples, cfg.split_seed)
    if cfg.shots_per_class:
        seed = cfg.split_seed if cfg.shots_seed is None else cfg.shots_seed
        splits["train"] = sample_shots(splits["train"], cfg.shots_per_class, seed)
    if cfg.max_eval_samples:
        for name in ("validation", "test"):
            splits[name] = _subsample(splits[name], cfg.max_eval_samples, cfg.split_seed)
    hashes = {str(p): sha256_file(p) for p in hashed}
    data = Dataset(splits["train"], splits["validation"], splits["test"], label_map, hashes)
    _warn_overlaps(data.overlaps())
    return data


def assign_splits(names: list[str], where: str) -> dict[str, str]:
    """Map each split role (train, validation, test) to the one of `names` that plays it (`SPLIT_NAMES`, any case);
    other names are left out with a warning.

    Raises:
        DataError: no name is a train split, or two names play one role.
    """
    roles: dict[str, list[str]] = {role: [n for n in names if n.lower() in aliases]
                                   for role, aliases in SPLIT_NAMES.items()}
    for role, found in roles.items():
        if len(found) > 1:
            raise DataError(f"{where}: several splits for the {role} split: {found}. Keep one.")
    if not roles["train"]:
        raise DataError(f"{where}: no train split; its splits are {list(names)}. Name one of them 'train' "
                        f"(and optionally {'/'.join(SPLIT_NAMES['validation'])} and 'test').")
    chosen = {role: found[0] for role, found in roles.items() if found}
    ignored = [n for n in names if n not in chosen.values()]
    if ignored:
        warnings.warn(f"{where}: splits {ignored} are not train, validation or test and were left out.", UserWarning,
                      stacklevel=3)
    return chosen


def _read_hf_folder(root: Path, cfg: DataConfig) -> tuple[dict[str, Table], list[Path]]:
    """The validated split tables of a `save_to_disk` folder, and its files (to hash)."""
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column, "labels") if c]
    parts, files = hf.read_folder(root, wanted)
    roles = assign_splits(list(parts), str(root)) if "" not in parts else {"train": ""}
    tables = {}
    for role, name in roles.items():
        records, row_names, columns = parts[name]
        source = f"{root.name}/{name}" if name else root.name
        if not records:
            raise DataError(f"{source}: the dataset has no rows. Expected columns '{cfg.text_column}' and "
                            f"'{cfg.label_column}' and at least one row.")
        tables[role] = table_from_records(records, row_names, columns, source, cfg.text_column, cfg.label_column,
                                          cfg.text_pair_column, cfg.label_sep)
    return tables, files


def _warn_overlaps(overlaps: dict[str, int]) -> None:
    shared = {pair: n for pair, n in overlaps.items() if n}
    if shared:
        warnings.warn(f"texts occur in more than one split ({', '.join(f'{p}: {n} rows' for p, n in shared.items())}"
                      "); their scores are optimistic. Remove the duplicates to measure unseen texts.", UserWarning,
                      stacklevel=3)


def _carve_missing(splits: dict[str, Split], seed: int) -> dict[str, Split]:
    train = splits["train"]
    if "validation" not in splits and "test" not in splits:
        rest, test = _split(train, 0.1, seed, "test")
        train, val = _split(rest, 1 / 9, seed, "validation")
        return {"train": train, "validation": val, "test": test}
    for missing in ("validation", "test"):
        if missing not in splits:
            train, carved = _split(train, 0.1, seed, missing)
            splits[missing] = carved
    splits["train"] = train
    return splits


def _split(split: Split, fraction: float, seed: int, name: str) -> tuple[Split, Split]:
    """Carve `fraction` of `split` into a new split `name`, stratified by label when possible."""
    from sklearn.model_selection import train_test_split

    idx = list(range(len(split)))
    if len(idx) < 3:
        raise DataError(f"{Path(split.source).name}: {len(split)} rows are too few to carve a {name} split; "
                        "provide more rows or separate train/validation/test files.")
    strat = _stratify_key(split.labels)
    try:
        keep, carved = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    except ValueError:  # a class with a single row cannot be stratified
        keep, carved = train_test_split(idx, test_size=max(fraction, 1 / len(idx)), random_state=seed)
    how = f"{fraction:.0%} of {Path(split.source).name}, stratified, seed {seed}"
    return _take(split, sorted(keep), split.name, split.source), _take(split, sorted(carved), name, f"carved: {how}")


def _subsample(split: Split, n: int, seed: int) -> Split:
    if n >= len(split):
        return split
    from sklearn.model_selection import train_test_split

    idx = list(range(len(split)))
    try:
        keep, _ = train_test_split(idx, train_size=n, random_state=seed, stratify=_stratify_key(split.labels))
    except ValueError:
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return _take(split, sorted(keep), split.name, f"{split.source} (sample of {n}, seed {seed})")


def sample_shots(split: Split, n: int, seed: int) -> Split:
    """Keep `n` rows of each class of `split` (every row of a class that has fewer), drawn with `seed`.

    Why: few-label methods are compared at a fixed number of labelled rows per class, as a user who labels
    a handful of examples of each class would have them. Multi-label rows count for every label they carry;
    labels are filled in order of the label map, so a label may end with more than `n` rows."""
    import random

    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    carried = [v if isinstance(v, list) else [v] for v in split.labels]
    counts: dict[str, int] = {}
    keep: set[int] = set()
    for label in sorted({x for v in carried for x in v}, key=str):
        for i in order:
            if counts.get(label, 0) >= n:
                break
            if label in carried[i] and i not in keep:
                keep.add(i)
                for x in carried[i]:
                    counts[x] = counts.get(x, 0) + 1
    return _take(split, sorted(keep), split.name, f"{split.source} ({n} per class, seed {seed})")


def _take(split: Split, idx: list[int], name: str, source: str) -> Split:
    rows = [split.row_names[i] for i in idx] if split.row_names else []
    return Split(name, [split.texts[i] for i in idx], [split.labels[i] for i in idx], source, rows)


def _stratify_key(labels: list[Any]) -> list[str]:
    return ["|".join(v) if isinstance(v, list) else v for v in labels]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
