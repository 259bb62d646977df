"""An earlier good run folder survives every failure while a new one is saved over it."""

import errno
import os

import pytest

from textlora.errors import RunExistsError
from textlora.run_folder import is_complete, staged_dir


@pytest.fixture
def good_run(tmp_path):
    out = tmp_path / "run"
    with staged_dir(out) as d:
        (d / "weights.bin").write_bytes(b"good")
        (d / "manifest.json").write_text("{}")
    return out


def _assert_intact(out):
    assert is_complete(out) and (out / "weights.bin").read_bytes() == b"good"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   PermissionError(errno.EACCES, "Permission denied"), KeyboardInterrupt()])
def test_failure_while_writing_keeps_the_old_run(good_run, error):
    with pytest.raises(type(error)):
        with staged_dir(good_run, overwrite=True) as d:
            (d / "weights.bin").write_bytes(b"half")
            raise error
    _assert_intact(good_run)


def test_failure_at_the_final_rename_puts_the_old_run_back(good_run, monkeypatch):
    real = os.replace

    def flaky(src, dst):
        if ".staging-" in str(src):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr("textlora.run_folder.os.replace", flaky)
    with pytest.raises(PermissionError):
        with staged_dir(good_run, overwrite=True) as d:
            (d / "weights.bin").write_bytes(b"new")
    _assert_intact(good_run)


def test_an_existing_run_needs_overwrite(good_run):
    with pytest.raises(RunExistsError, match="already holds a finished run; pass --overwrite"):
        with staged_dir(good_run):
            pass
    _assert_intact(good_run)
