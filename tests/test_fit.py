"""`textlora.fit` from Python objects: every kind of split, the same checks and errors as files, settings by name
or dotted key, the content-addressed data, the manifest's hash, a temporary run kept with `Predictor.save`."""

import gc
import json

import pandas as pd
import pytest
from conftest import make_rows, write_jsonl, write_splits

import textlora
from textlora.config import DataConfig
from textlora.data import read_table
from textlora.data.memory import materialize
from textlora.errors import ConfigError, DataError, RunExistsError
from textlora.fitting import resolve_settings


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """textlora's cache in the test's folder, never the user's."""
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny(tiny_models):
    """fit's settings for the tiny BERT: one quick epoch, fp32, no base evaluation."""
    return {"model": str(tiny_models["bert"]), "max_length": 32, "r": 4, "alpha": 8, "epochs": 1, "batch_size": 8,
            "lr": 1e-2, "precision": "fp32", "eval_base": False, "progress": False}


def _frame(n, seed):
    return pd.DataFrame(make_rows(n, seed=seed))


def test_fit_dataframe_predict_save_and_reload(tmp_path, tiny, cache):
    clf = textlora.fit(_frame(60, 1), _frame(15, 2), _frame(15, 3), **tiny)
    assert clf.labels_ == ["neg", "neu", "pos"]
    texts = ["good great happy", "bad awful sad"]
    predicted = clf.predict(texts)
    assert set(predicted) <= set(clf.labels_)
    data = clf.manifest["data"]
    folder = cache / "data" / data["in_memory_sha256"]
    assert clf.config.data.path == str(folder) and sorted(p.name for p in folder.iterdir()) == [
        "test.jsonl", "train.jsonl", "validation.jsonl"]
    assert data["in_memory"] == {"train": "DataFrame, 60 rows", "validation": "DataFrame, 15 rows",
                                 "test": "DataFrame, 15 rows"}
    assert {s: v["rows"] for s, v in data["splits"].items()} == {"train": 60, "validation": 15, "test": 15}

    kept = clf.save(tmp_path / "kept")
    again = textlora.load(kept)
    assert again.predict(texts) == predicted and again.manifest == clf.manifest
    with pytest.raises(RunExistsError, match="already holds a finished run"):
        clf.save(kept)
    assert clf.save(kept, overwrite=True) == kept

    temporary = clf.run_dir.parent
    assert temporary.name.startswith("textlora-fit-") and temporary.is_dir()
    del clf
    gc.collect()
    assert not temporary.exists()  # the temporary run goes with the Predictor; the saved copy stays
    assert textlora.load(kept).predict(texts) == predicted


def test_save_never_replaces_other_files(tmp_path, tiny):
    clf = textlora.fit(make_rows(40, 1), out=tmp_path / "run", **tiny)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RunExistsError, match="not a textlora run"):
        clf.save(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    for inside in (tmp_path / "run", tmp_path / "run" / "copy", tmp_path):
        with pytest.raises(ConfigError, match="the run folder"):
            clf.save(inside, overwrite=True)
    assert (tmp_path / "run").is_dir() and clf.run_dir == tmp_path / "run"  # `out` given: no temporary folder


def test_fit_datasetdict_alone_gives_every_split(tiny):
    datasets = pytest.importorskip("datasets")
    names = ["neg", "neu", "pos"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})

    def split(n, seed):
        rows = make_rows(n, seed=seed)
        return datasets.Dataset.from_dict({"text": [r["text"] for r in rows],
                                           "label": [names.index(r["label"]) for r in rows]}, features=features)

    dd = datasets.DatasetDict({"train": split(40, 1), "validation": split(12, 2), "test": split(12, 3)})
    clf = textlora.fit(dd, **tiny)
    assert clf.labels_ == names  # ClassLabel names, not ids
    assert clf.manifest["data"]["in_memory"] == {"train": "Dataset, 40 rows", "validation": "Dataset, 12 rows",
                                                 "test": "Dataset, 12 rows"}
    with pytest.raises(DataError, match="train is a DatasetDict with splits"):
        textlora.fit(dd, dd["validation"], **tiny)


def test_fit_reads_a_path_like_data(tmp_path, tiny):
    clf = textlora.fit(str(write_splits(tmp_path / "data", 40, 12, 12)), **tiny)
    assert "in_memory_sha256" not in clf.manifest["data"] and clf.config.data.path == str(tmp_path / "data")
    with pytest.raises(ConfigError, match="train is a path"):
        textlora.fit(str(tmp_path / "data"), make_rows(5), **tiny)


def test_every_kind_of_split_gives_the_same_data(cache):
    """A DataFrame, a list of dicts, a (texts, labels) pair and a Dataset of the same rows are the same data: one
    content hash, one folder."""
    rows = make_rows(30, seed=1)
    kinds = {"DataFrame": pd.DataFrame(rows).assign(extra=1), "list of dicts": rows,
             "(texts, labels)": ([r["text"] for r in rows], pd.Series([r["label"] for r in rows]))}
    datasets = pytest.importorskip("datasets")
    kinds["Dataset"] = datasets.Dataset.from_list(rows)
    made = {kind: materialize({"train": obj}, DataConfig()) for kind, obj in kinds.items()}
    assert len({m.sha256 for m in made.values()}) == 1
    assert {kind: m.sources["train"] for kind, m in made.items()} == {k: f"{k}, 30 rows" for k in kinds}
    assert list((cache / "data").iterdir()) == [made["DataFrame"].path]
    written = [json.loads(x) for x in (made["DataFrame"].path / "train.jsonl").read_text().splitlines()]
    assert written == [{"text": r["text"], "label": r["label"]} for r in rows]
    assert read_table(made["DataFrame"].path / "train.jsonl").labels == [r["label"] for r in rows]


def test_multilabel_rows_and_numbers_are_read_as_from_files(tmp_path):
    rows = [{"text": f"text {i}", "labels": [i % 3, (i + 1) % 3] if i % 2 else [i % 3]} for i in range(12)]
    made = materialize({"train": pd.DataFrame(rows)}, DataConfig())  # the default 'label' reads 'labels'
    from_memory = read_table(made.path / "train.jsonl")
    from_file = read_table(write_jsonl(tmp_path / "m.jsonl", rows))
    assert from_memory.labels == from_file.labels and from_memory.labels[1] == ["1", "2"]


@pytest.mark.parametrize("bad, match", [
    ("empty_text", r"^train \(DataFrame\) index 3: column 'text' is empty\. Every row needs a text; fix or drop"),
    ("none_label", r"^train \(list of dicts\) index 2: label column 'label' is empty\. Every row needs a label"),
    ("no_column", r"^train \(list of dicts\): column 'label' not found; columns are \['sentiment', 'text'\]\. "
                  r"Set fit's label_column= to the right name\.$"),
    ("one_class", r"only one class"),
    ("unseen", r"^validation \(DataFrame\) index 1: label 'zzz' was never seen in the training split"),
    ("mismatch", r"^train: \(texts, labels\) hold 3 texts but 2 labels"),
    ("columns_dict", r"^train: expected a pandas DataFrame, .* got dict\. A dict of columns: pass pandas"),
    ("texts_only", r"got list\. A list of texts: pass \(texts, labels\)"),
    ("empty", r"^train: the list is empty"),
    ("not_dicts", r"got a list whose item 1 is not a dict"),
])
def test_bad_data_is_one_line_before_training(tiny, cache, bad, match):
    rows = make_rows(12)
    frame = pd.DataFrame(rows)
    frame.loc[3, "text"] = "  "
    cases = {
        "empty_text": (frame, None),
        "none_label": ([{**r, "label": None} if i == 2 else r for i, r in enumerate(rows)], None),
        "no_column": ([{"text": r["text"], "sentiment": r["label"]} for r in rows], None),
        "one_class": ([{**r, "label": "pos"} for r in rows], None),
        "unseen": (rows, pd.DataFrame([rows[0], {"text": "x", "label": "zzz"}])),
        "mismatch": ((["a", "b", "c"], ["pos", "neg"]), None),
        "columns_dict": ({"text": ["a"], "label": ["pos"]}, None),
        "texts_only": (["a", "b"], None),
        "empty": ([], None),
        "not_dicts": ([rows[0], "b"], None),
    }
    train, validation = cases[bad]
    with pytest.raises(DataError, match=match) as e:
        textlora.fit(train, validation, **tiny)
    assert "\n" not in str(e.value)
    if bad != "one_class":  # one class is found by load_dataset, after the data is written
        assert not (cache / "data").exists()


def test_errors_read_as_a_files_do(tmp_path):
    """The same bad row gives the same message from a file and from memory, but for where it is."""
    rows = make_rows(12)
    rows[3] = {**rows[3], "text": ""}
    with pytest.raises(DataError) as from_file:
        read_table(write_jsonl(tmp_path / "d.jsonl", rows))
    with pytest.raises(DataError) as from_memory:
        materialize({"train": rows}, DataConfig())
    assert str(from_file.value).split(": ", 1)[1] == str(from_memory.value).split(": ", 1)[1]


def test_settings_by_name_section_alias_or_dotted():
    assert resolve_settings({"epochs": 2, "lr": 1e-3, "method": "head", "max_length": 64, "r": 8, "model": "m",
                             "lora_dropout": 0.1, "model_dropout": 0.2, "train.seed": 3, "max_train_samples": 5}) == {
        "train.epochs": 2, "train.lr": 1e-3, "model.method": "head", "model.max_length": 64, "lora.r": 8,
        "model.name": "m", "lora.dropout": 0.1, "model.dropout": 0.2, "train.seed": 3, "data.max_train_samples": 5}


@pytest.mark.parametrize("settings, match", [
    ({"dropout": 0.1}, r"setting 'dropout' is ambiguous: it may be model\.dropout or lora\.dropout; pass "
                       r"model_dropout= or lora_dropout="),
    ({"epoch": 2}, r"unknown setting 'epoch' \(did you mean 'epochs'\?\)"),
    ({"lora.rank": 2}, r"unknown setting 'lora\.rank' \(did you mean 'lora\.r'\?\)"),
    ({"path": "x", "data.label_column": "y"}, r"'path' is set by fit's own arguments.*; 'data\.label_column' is set"),
])
def test_bad_settings_are_one_line(settings, match):
    with pytest.raises(ConfigError, match=match):
        resolve_settings(settings)


def test_bad_values_stop_before_any_work(tmp_path, cache, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer .*got 0"):
        textlora.fit(make_rows(12), epochs=0)
    with pytest.raises(ConfigError, match="model.method must be one of"):
        textlora.fit(make_rows(12), method="prompt")
    assert not (cache / "data").exists() and not list(tmp_path.glob("textlora-fit-*"))
