"""Hugging Face `save_to_disk` folders as --data: splits by name, ClassLabel names, multi-label lists, the
`labels` fallback, the pyarrow reader without `datasets`, and the same one-line errors as files."""

import sys

import pytest
from conftest import make_rows, write_jsonl

from textlora.config import DataConfig
from textlora.data import load_dataset
from textlora.errors import DataError

datasets = pytest.importorskip("datasets")
NAMES = ["neg", "neu", "pos"]


def _dataset(n: int, seed: int) -> "datasets.Dataset":
    """`make_rows` with the label as a ClassLabel id."""
    rows = make_rows(n, seed=seed)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})
    return datasets.Dataset.from_dict({"text": [r["text"] for r in rows],
                                       "label": [NAMES.index(r["label"]) for r in rows]}, features=features)


def _multi(n: int, seed: int) -> "datasets.Dataset":
    rows = make_rows(n, seed=seed)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.ClassLabel(names=NAMES))})
    ids = [[NAMES.index(r["label"])] + ([0] if i % 4 == 0 and r["label"] != "neg" else []) for i, r in enumerate(rows)]
    return datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "labels": ids}, features=features)


@pytest.fixture
def hf_dict(tmp_path):
    """A DatasetDict folder with train/valid/test splits (valid: another accepted validation name)."""
    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": _dataset(60, 1), "valid": _dataset(15, 2), "test": _dataset(15, 3)}) \
        .save_to_disk(str(folder))
    return folder


@pytest.fixture(params=["datasets", "pyarrow"])
def load(request, monkeypatch):
    """`load_dataset(DataConfig(...))` with `datasets` importable, then with it gone (the pyarrow reader)."""
    def run(path, **kw):
        with monkeypatch.context() as m:
            if request.param == "pyarrow":
                m.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
            return load_dataset(DataConfig(path=str(path), **kw))
    return run


def test_datasetdict_folder_gives_splits_and_class_names(hf_dict, load):
    data = load(hf_dict)
    assert data.label_map.labels == NAMES
    expected = make_rows(15, seed=2)
    assert data.validation.texts == [r["text"] for r in expected]
    assert data.validation.labels == [r["label"] for r in expected]
    assert (len(data.train), len(data.test)) == (60, 15)
    assert any(p.endswith(".arrow") for p in data.files) and all(len(h) == 64 for h in data.files.values())


def test_readers_agree(hf_dict, monkeypatch):
    from textlora.data import hf

    with_datasets = load_dataset(DataConfig(path=str(hf_dict)))
    monkeypatch.setitem(sys.modules, "datasets", None)
    calls = []
    monkeypatch.setattr(hf, "_read_arrow", lambda *a, _read=hf._read_arrow: calls.append(a) or _read(*a))
    with_pyarrow = load_dataset(DataConfig(path=str(hf_dict)))
    assert len(calls) == 3  # one per split folder, read by pyarrow alone
    for a, b in zip(with_datasets.splits().values(), with_pyarrow.splits().values()):
        assert (a.texts, a.labels) == (b.texts, b.labels)
    assert with_datasets.files == with_pyarrow.files


def test_single_dataset_folder_is_all_the_data(tmp_path, load):
    folder = tmp_path / "one"
    _dataset(60, 1).save_to_disk(str(folder))
    data = load(folder)
    assert (len(data.train), len(data.validation), len(data.test)) == (48, 6, 6)
    assert data.test.source.startswith("carved")


def test_multilabel_labels_column_is_read_without_setting_it(tmp_path, load):
    folder = tmp_path / "multi"
    datasets.DatasetDict({"train": _multi(40, 1), "test": _multi(12, 2)}).save_to_disk(str(folder))
    data = load(folder)  # label_column stays 'label'
    assert data.label_map.multi_label and data.label_map.labels == NAMES
    assert ["neu", "neg"] in data.train.labels


def test_labels_fallback_applies_to_files_too(tmp_path):
    """The README's multi-label JSONL ({"text": ..., "labels": [...]}) trains with the default label column."""
    rows = [{"text": r["text"], "labels": [r["label"]]} for r in make_rows(30)]
    data = load_dataset(DataConfig(path=str(write_jsonl(tmp_path / "m.jsonl", rows))))
    assert data.label_map.multi_label and data.label_map.labels == NAMES


def test_missing_column_is_one_line_naming_the_split(hf_dict, load):
    with pytest.raises(DataError, match=r"hf/train: column 'sentence' not found; columns are \['label', 'text'\]"):
        load(hf_dict, text_column="sentence")


def test_no_label_id_is_an_empty_label(tmp_path, load):
    ds = _dataset(30, 1)
    ds = ds.map(lambda row, i: {"label": -1 if i == 7 else row["label"]}, with_indices=True)
    ds.save_to_disk(str(tmp_path / "unlabeled"))
    with pytest.raises(DataError, match="unlabeled index 7: label column 'label' is empty"):
        load(tmp_path / "unlabeled")


def test_unknown_split_is_left_out_with_a_warning(tmp_path, load):
    folder = tmp_path / "extra"
    datasets.DatasetDict({"train": _dataset(40, 1), "unsupervised": _dataset(5, 9)}).save_to_disk(str(folder))
    with pytest.warns(UserWarning, match=r"\['unsupervised'\] are not train, validation or test"):
        data = load(folder)
    assert len(data.train) + len(data.validation) + len(data.test) == 40


def test_no_train_split_lists_the_splits(tmp_path, load):
    folder = tmp_path / "notrain"
    datasets.DatasetDict({"fit": _dataset(10, 1), "test": _dataset(5, 2)}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"no train split; its splits are \['fit', 'test'\]"):
        load(folder)


def test_missing_arrow_files_are_one_line(hf_dict, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    for f in (hf_dict / "train").glob("*.arrow"):
        f.unlink()
    with pytest.raises(DataError, match="no Arrow data files"):
        load_dataset(DataConfig(path=str(hf_dict)))


def test_cli_trains_and_evaluates_on_a_hf_folder(hf_dict, tiny_models, tmp_path, capsys):
    import json

    from textlora.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(hf_dict), "--model", str(tiny_models["bert"]), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--quiet", "model.max_length=32", "train.eval_base=false"]) == 0
    assert json.loads((out / "labels.json").read_text())["labels"] == NAMES
    assert main(["eval", str(out), "--data", str(hf_dict), "--split", "validation",
                 "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 15


def test_reading_data_imports_no_datasets():
    import subprocess

    code = "import sys, textlora.data, textlora.fitting; print('datasets' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
