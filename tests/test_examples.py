"""The user-facing examples run as written: examples/notebook_quickstart.py as a subprocess, and every Python block
of the README written as a doctest (`>>>`). Both train the real embedded MiniLM on a few rows, hence `slow`; the
default `python -m pytest -q` runs them, so CI does."""

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_doctests() -> list[str]:
    """The ```python blocks of README.md that hold `>>>` examples."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if ">>> " in b]


@pytest.mark.skipif(not (SHARED / "emotion").is_dir(), reason="../shared/datasets/emotion not found")
def test_notebook_quickstart_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TEXTLORA_CACHE": str(tmp_path / "cache"),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_quickstart.py"), "--out",
                           str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "DataFrame: saved to" in done.stdout and "datasets folder: saved to" in done.stdout
    assert "labels ['anger', 'fear', 'joy', 'love', 'sadness', 'surprise']" in done.stdout
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"emotion-dataframe", "emotion-datasets"}
    assert all((p / "manifest.json").is_file() for p in (tmp_path / "runs").iterdir())


def test_readme_has_doctests():
    assert readme_doctests(), "README.md lost its doctest-style example (From a notebook)"


@pytest.mark.parametrize("index", range(len(readme_doctests())))
def test_readme_doctest(tmp_path, monkeypatch, index):
    monkeypatch.chdir(tmp_path)  # the example saves to runs/...
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))
    test = doctest.DocTestParser().get_doctest(readme_doctests()[index], {}, f"README.md block {index}", "README.md",
                                               0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: print(text, end=""))
    assert runner.failures == 0 and runner.tries > 0
