"""Every bad input named in the spine issue gets a clear DataError; every format loads."""

import gzip
import json

import pandas as pd
import pytest
from conftest import make_rows, write_jsonl

from textlora.config import DataConfig
from textlora.data import LabelMap, load_dataset, read_table
from textlora.errors import DataError


def _load(path, **kw):
    return load_dataset(DataConfig(path=str(path), **kw))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".jsonl.gz", ".json", ".parquet"])
def test_every_format_reads(tmp_path, suffix):
    rows = make_rows(12)
    p = tmp_path / f"data{suffix}"
    df = pd.DataFrame(rows)
    if suffix == ".csv":
        df.to_csv(p, index=False)
    elif suffix == ".tsv":
        df.to_csv(p, sep="\t", index=False)
    elif suffix == ".jsonl":
        write_jsonl(p, rows)
    elif suffix == ".jsonl.gz":
        with gzip.open(p, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    elif suffix == ".json":
        p.write_text(json.dumps(rows))
    else:
        df.to_parquet(p)
    t = read_table(p)
    assert t.texts == [r["text"] for r in rows] and t.labels == [r["label"] for r in rows]


def test_one_file_is_split_80_10_10_stratified(tmp_path):
    p = write_jsonl(tmp_path / "all.jsonl", make_rows(300))
    d = _load(p)
    assert (len(d.train), len(d.validation), len(d.test)) == (240, 30, 30)
    assert sorted(d.validation.labels).count("pos") == 10  # stratified
    assert "carved" in d.test.source and "seed 42" in d.test.source
    assert not set(d.train.texts) & set(d.test.texts) or len(d.train) + len(d.test) + len(d.validation) == 300
    assert d.label_map.labels == ["neg", "neu", "pos"]  # sorted


def test_train_and_test_only_carves_validation(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", make_rows(100))
    write_jsonl(tmp_path / "test.jsonl", make_rows(30, seed=5))
    d = _load(tmp_path)
    assert (len(d.train), len(d.validation), len(d.test)) == (90, 10, 30)
    assert d.describe()["validation"]["source"].startswith("carved: 10% of train.jsonl")


def test_split_is_seeded(tmp_path):
    p = write_jsonl(tmp_path / "all.jsonl", make_rows(100))
    assert _load(p).test.texts == _load(p).test.texts
    assert _load(p).test.texts != _load(p, split_seed=7).test.texts


def test_integer_labels_sort_numerically():
    assert LabelMap.from_labels(["10", "2", "1"]).labels == ["1", "2", "10"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data path .*nope.* not found"):
        _load(tmp_path / "nope")
    with pytest.raises(DataError, match=r"data file .*nope.csv not found"):
        read_table(tmp_path / "nope.csv")


def test_folder_without_train(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no train file found; expected train.csv.*found \['notes.txt'\]"):
        _load(tmp_path)


def test_unknown_format(tmp_path):
    p = tmp_path / "data.xlsx"
    p.write_bytes(b"PK")
    with pytest.raises(DataError, match=r"data.xlsx: unknown data format '.xlsx'; expected one of"):
        _load(p)


def test_missing_column_lists_columns(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"sentence": "hi", "label": "a"}] * 3)
    with pytest.raises(DataError, match=r"column 'text' not found; columns are \['label', 'sentence'\]\. "
                                        r"Set --text-column"):
        read_table(p)
    with pytest.raises(DataError, match=r"column 'sentiment' not found; .*--label-column"):
        read_table(p, text_column="sentence", label_column="sentiment")


def test_empty_text_names_the_row(tmp_path):
    rows = make_rows(5)
    rows[3]["text"] = "   "
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"d.jsonl line 4: column 'text' is empty"):
        read_table(p)
    p = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    with pytest.raises(DataError, match=r"d.csv row 4: column 'text'"):
        read_table(p)


def test_non_string_text(tmp_path):
    rows = make_rows(5)
    rows[1]["text"] = 42
    with pytest.raises(DataError, match=r"line 2: column 'text' must be a non-empty string, got int 42"):
        read_table(write_jsonl(tmp_path / "d.jsonl", rows))
    rows[1]["text"] = None
    with pytest.raises(DataError, match=r"line 2: column 'text' must be a non-empty string, got nothing"):
        read_table(write_jsonl(tmp_path / "d.jsonl", rows))


def test_missing_label(tmp_path):
    rows = make_rows(5)
    rows[2]["label"] = None
    with pytest.raises(DataError, match=r"line 3: label column 'label' is empty"):
        read_table(write_jsonl(tmp_path / "d.jsonl", rows))


def test_label_unseen_in_train_is_named(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", make_rows(30))
    val = make_rows(9, seed=2)
    val[6]["label"] = "sarcasm"
    write_jsonl(tmp_path / "validation.jsonl", val)
    write_jsonl(tmp_path / "test.jsonl", make_rows(9, seed=3))
    with pytest.raises(DataError, match=r"validation.jsonl line 7: label 'sarcasm' was never seen in the training "
                                        r"split; train labels are \['neg', 'neu', 'pos'\]"):
        _load(tmp_path)


def test_one_class_only(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", make_rows(30, labels=("pos",)))
    with pytest.raises(DataError, match=r"only one class \(\['pos'\]\); a classifier needs at least two"):
        _load(p)


def test_undecodable_bytes(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"text,label\ngood day,pos\ncaf\xe9 bad,neg\n")
    with pytest.raises(DataError, match=r"d.csv line 3: bytes at offset \d+ are not valid UTF-8.*Re-save the file"):
        read_table(p)


def test_malformed_jsonl_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", \n')
    with pytest.raises(DataError, match=r"d.jsonl line 2: not valid JSON"):
        read_table(p)


def test_max_train_samples_is_stratified(tmp_path):
    p = write_jsonl(tmp_path / "all.jsonl", make_rows(300))
    d = _load(p, max_train_samples=30)
    assert len(d.train) == 30 and sorted(set(d.train.labels)) == ["neg", "neu", "pos"]


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    rows = [{"text": "a\u0085b \u2028 c\u2029d\x1c", "label": "x"}, {"text": "crlf line", "label": "y"}]
    p = tmp_path / "d.jsonl"
    p.write_bytes(("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n").encode())
    assert read_table(p).texts == [r["text"] for r in rows]
