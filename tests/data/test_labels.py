"""Labels read one way whatever the file format; texts shared between splits are counted and warned about."""

import json

import pandas as pd
import pytest
from conftest import make_rows, write_jsonl

from textlora.config import DataConfig
from textlora.data import load_dataset, read_table
from textlora.data.io import normalize_label


@pytest.mark.parametrize("values, expected", [
    ([1, 1.0, "1.0", " 1 ", "01", "+1"], "1"),
    ([True, "true", "TRUE", "True"], "true"),
    ([False, "false", "False"], "false"),
    ([0.5, "0.50", ".5"], "0.5"),
    (["joy", " joy "], "joy"),
])
def test_one_label_one_spelling(values, expected):
    assert {normalize_label(v) for v in values} == {expected}


def test_numeric_and_boolean_labels_are_one_class_across_formats(tmp_path):
    """JSONL gives numbers and booleans, CSV strings: before, 1, 1.0 and "1.0" were three classes."""
    rows = [{"text": f"text {i}", "label": v} for i, v in enumerate([1, 1.0, "1.0", 0, 0.0, "0"])]
    jsonl = read_table(write_jsonl(tmp_path / "a.jsonl", rows))
    pd.DataFrame(rows).astype({"label": str}).to_csv(tmp_path / "a.csv", index=False)
    csv = read_table(tmp_path / "a.csv")
    assert jsonl.labels == csv.labels == ["1", "1", "1", "0", "0", "0"]
    flags = [{"text": f"flag {i}", "label": v} for i, v in enumerate([True, "true", "True", False, "false"])]
    assert read_table(write_jsonl(tmp_path / "b.jsonl", flags)).labels == ["true"] * 3 + ["false"] * 2


def test_multi_label_parts_are_normalised(tmp_path):
    rows = [{"text": "a", "label": [1.0, "2"]}, {"text": "b", "label": "1.0|true"}]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    assert read_table(tmp_path / "m.json", label_sep="|").labels == [["1", "2"], ["1", "true"]]


def test_texts_shared_between_splits_are_counted_and_warned(tmp_path):
    train = make_rows(30, seed=1)
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "validation.jsonl", train[:2] + make_rows(10, seed=2))
    write_jsonl(tmp_path / "test.jsonl", train[:3] + make_rows(10, seed=3)[:1] + make_rows(10, seed=2)[:1])
    with pytest.warns(UserWarning, match=r"more than one split \(train/validation: 2 rows, train/test: 3 rows, "
                                         r"validation/test: 3 rows\)"):
        d = load_dataset(DataConfig(path=str(tmp_path)))
    assert d.overlaps() == {"train/validation": 2, "train/test": 3, "validation/test": 3}  # 2 of them also in train


def test_disjoint_splits_warn_nothing(tiny_data, recwarn):
    d = load_dataset(DataConfig(path=str(tiny_data)))
    assert d.overlaps() == {"train/validation": 0, "train/test": 0, "validation/test": 0}
    assert not [w for w in recwarn if "more than one split" in str(w.message)]


def test_manifest_records_split_overlaps(tiny_models, tiny_data, tmp_path):
    from conftest import tiny_config

    from textlora.train import train

    train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=1), progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["split_overlaps"] == {"train/validation": 0, "train/test": 0, "validation/test": 0}
