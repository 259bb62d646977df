"""Property-based tests of the data layer: any CSV/JSONL content is a clean load or a DataError.

Settings: 200 examples per property (hypothesis `max_examples`), no deadline; derandomized so CI is repeatable.
"""

import csv
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textlora.config import DataConfig
from textlora.data import load_dataset, read_table
from textlora.errors import DataError

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

texts = st.one_of(
    st.text(),  # any unicode: quotes, commas, tabs, newlines, NUL, surrogates excluded by hypothesis
    st.sampled_from(["", " ", '"', '""', "a,b", "line1\nline2", "tab\there", "\r\n", "é ü 漢字 🙂"]),
    st.builds(lambda n: "x" * n, st.integers(100_000, 300_000)),  # huge fields
)
labels = st.one_of(st.text(max_size=6), st.integers(-3, 3), st.none(), st.booleans(),
                   st.lists(st.text(min_size=1, max_size=3), max_size=3))
rows = st.lists(st.fixed_dictionaries({"text": texts, "label": labels}), min_size=0, max_size=12)


def _ok_or_clean_error(fn):
    try:
        return fn()
    except DataError as e:
        assert str(e) and "\n" not in str(e)[:1]
        return None


def _write_csv(path, rs):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["text", "label"])
    w.writeheader()
    for r in rs:
        w.writerow({"text": r["text"], "label": "" if r["label"] is None else r["label"]})
    path.write_text(buf.getvalue(), encoding="utf-8", errors="surrogatepass")


@SETTINGS
@given(rs=rows)
def test_jsonl_any_content(tmp_path_factory, rs):
    path = tmp_path_factory.mktemp("j") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rs), encoding="utf-8")
    table = _ok_or_clean_error(lambda: read_table(path))
    if table is not None:
        assert table.texts == [r["text"] for r in rs]  # exactly what was written
        assert all(t.strip() for t in table.texts)
    _ok_or_clean_error(lambda: load_dataset(DataConfig(path=str(path))))


@SETTINGS
@given(rs=rows)
def test_csv_any_content(tmp_path_factory, rs):
    path = tmp_path_factory.mktemp("c") / "train.csv"
    _write_csv(path, rs)
    table = _ok_or_clean_error(lambda: read_table(path))
    if table is not None:
        assert len(table.texts) == len(rs)
        assert all(isinstance(t, str) and t.strip() for t in table.texts)
    _ok_or_clean_error(lambda: load_dataset(DataConfig(path=str(path))))


@SETTINGS
@given(blob=st.binary(max_size=2000), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".jsonl.gz",
                                                               ".parquet"]))
def test_arbitrary_bytes(tmp_path_factory, blob, suffix):
    path = tmp_path_factory.mktemp("b") / f"train{suffix}"
    path.write_bytes(blob)
    _ok_or_clean_error(lambda: load_dataset(DataConfig(path=str(path))))
