"""An earlier good run folder survives every failure while a new one is saved over it."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_config

from textlora.cli import main
from textlora.config import RunConfig
from textlora.errors import ConfigError, DiskFullError, RunExistsError, TextloraError
from textlora.run_folder import is_complete, run_lock, staged_dir
from textlora.train import train

MANIFEST_TEXT = '{"textlora_version": "0"}'


@pytest.fixture
def good_run(tmp_path):
    out = tmp_path / "run"
    with staged_dir(out) as d:
        (d / "weights.bin").write_bytes(b"good")
        (d / "manifest.json").write_text(MANIFEST_TEXT)
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


# --- never lose a user's files (issue 19) -------------------------------------------------------------


def _snapshot(folder):
    """Every file under `folder` with its bytes, to show that nothing was touched."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.parametrize("where", ["is", "holds", "is inside"])
def test_out_never_overlaps_the_data_folder(tiny_models, tiny_data, where):
    out = {"is": tiny_data, "holds": tiny_data.parent, "is inside": tiny_data / "run"}[where]
    before = _snapshot(tiny_data)
    with pytest.raises(ConfigError, match=f"--out .* {where} data.path .*choose another --out"):
        train(tiny_config(tiny_data, tiny_models["bert"], out), overwrite=True, progress=False)
    assert _snapshot(tiny_data) == before
    assert not (tiny_data / "run").exists() and not list(tiny_data.parent.glob(".*"))


def test_out_never_is_a_single_data_file(tiny_models, tiny_data):
    data = tiny_data / "train.jsonl"
    before = data.read_bytes()
    with pytest.raises(ConfigError, match=r"is data.path \(.*train.jsonl\)"):
        train(tiny_config(data, tiny_models["bert"], data), overwrite=True, progress=False)
    assert data.read_bytes() == before


@pytest.mark.parametrize("manifest", [None, '{"start_url": "/"}'])  # none, or a web app's manifest.json
def test_overwrite_replaces_no_folder_of_unrelated_files(tiny_models, tiny_data, tmp_path, manifest):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my thesis")
    if manifest:
        (out / "manifest.json").write_text(manifest)
    before = _snapshot(out)
    with pytest.raises(RunExistsError, match="holds files that are not a textlora run .*--overwrite replaces only"):
        train(tiny_config(tiny_data, tiny_models["bert"], out), overwrite=True, progress=False)
    assert _snapshot(out) == before


def test_overwrite_replaces_an_empty_folder_or_an_earlier_run(good_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, good_run):
        with staged_dir(out, overwrite=True) as d:
            (d / "manifest.json").write_text(MANIFEST_TEXT)
        assert is_complete(out)


def test_a_folder_that_appeared_during_training_is_not_replaced(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunExistsError, match="not a textlora run"):
        with staged_dir(out, overwrite=True) as d:
            (d / "manifest.json").write_text(MANIFEST_TEXT)
            out.mkdir()
            (out / "notes.txt").write_text("mine")
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("out", "message"), [(".", "is the current folder; a run needs a folder of its own"),
                                              ("..", "is the current folder or one above it"),
                                              ("somefile.txt/run", "somefile.txt is a file, not a folder")])
def test_bad_out_paths_are_one_line_errors(tiny_models, tiny_data, tmp_path, monkeypatch, out, message):
    here = tmp_path / "here"
    here.mkdir()
    (here / "somefile.txt").write_text("keep me")
    monkeypatch.chdir(here)
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match=message) as e:
        train(tiny_config(tiny_data, tiny_models["bert"], Path(out)), overwrite=True, progress=False)
    assert "\n" not in str(e.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("out", [[1, 2], ""])
def test_out_must_be_a_path(tiny_data, out):
    with pytest.raises(ConfigError, match=r"^out must be a non-empty string, got"):
        RunConfig.from_dict({"data": {"path": str(tiny_data)}, "out": out})
    with pytest.raises(ConfigError, match="out must be a non-empty string"):
        RunConfig().with_overrides({"out": out})


def test_a_second_training_on_the_same_out_refuses(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(  # a live training holding the lock
        [sys.executable, "-c", "import sys, time; from textlora.run_folder import run_lock\n"
         f"with run_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=1)
        with pytest.raises(RunExistsError, match=f"is being written by another training \\(pid {holder.pid} holds"):
            train(cfg, progress=False)
        assert not out.exists() and (tmp_path / ".run.lock").read_text().strip() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    train(cfg, progress=False)  # the holder was killed: its lock is stale and taken over
    assert is_complete(out) and not (tmp_path / ".run.lock").exists()


def test_a_lock_file_of_a_live_pid_is_respected(tiny_models, tiny_data, tmp_path):
    (tmp_path / ".run.lock").write_text(f"{os.getppid()}\n")
    with pytest.raises(RunExistsError, match=f"pid {os.getppid()} holds"):
        train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=1), progress=False)
    assert (tmp_path / ".run.lock").read_text() == f"{os.getppid()}\n"


def test_a_stale_lock_and_a_killed_save_are_cleaned_up(tiny_models, tiny_data, tmp_path):
    dead = _dead_pid()
    out = tmp_path / "run"
    (tmp_path / ".run.lock").write_text(f"{dead}\n")
    (tmp_path / f".run.staging-{dead}").mkdir()
    (tmp_path / f".run.staging-{dead}" / "weights.bin").write_bytes(b"half")
    (tmp_path / ".other.staging-1").mkdir()  # another run's name: not ours to touch
    train(tiny_config(tiny_data, tiny_models["bert"], out, epochs=1), progress=False)
    assert is_complete(out)
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".other.staging-1"]


def test_a_run_moved_aside_by_a_killed_save_is_put_back(tmp_path):
    dead, out = _dead_pid(), tmp_path / "run"
    old = tmp_path / f".run.old-{dead}"
    old.mkdir()
    (old / "manifest.json").write_text(MANIFEST_TEXT)
    (tmp_path / f".run.staging-{dead}").mkdir()
    with run_lock(out):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
    assert (out / "manifest.json").read_text() == MANIFEST_TEXT
    assert [p.name for p in tmp_path.glob(".*")] == []


@pytest.mark.parametrize("content", ["99999999999999\n", ""])
def test_a_lock_file_without_a_live_pid_is_taken_over(tmp_path, content):
    (tmp_path / ".run.lock").write_text(content)
    with run_lock(tmp_path / "run"):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".run.lock").exists()


def test_a_file_at_the_lock_path_that_is_not_a_lock_is_left_alone(tmp_path):
    (tmp_path / ".run.lock").write_text("not a pid")
    with pytest.raises(RunExistsError, match=r"is not a textlora lock \(it holds no pid\)") as e:
        with run_lock(tmp_path / "run"):
            pass
    assert "\n" not in str(e.value)
    assert (tmp_path / ".run.lock").read_text() == "not a pid"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are recognised through /proc")
def test_a_lock_of_a_killed_but_unreaped_process_is_taken_over(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.01)  # exited; not waited for, so a zombie
    (tmp_path / ".run.lock").write_text(f"{zombie.pid}\n")
    try:
        with run_lock(tmp_path / "run"):
            assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
    finally:
        zombie.wait()


def test_the_lock_is_released_when_training_fails(tiny_models, tiny_data, tmp_path):
    def stop(epoch, metrics):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())  # held while training
        raise KeyboardInterrupt

    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_epoch=stop)
    assert not (tmp_path / ".run.lock").exists()


def test_a_full_disk_at_the_final_save_is_one_line(good_run):
    with pytest.raises(DiskFullError, match=r"cannot write the run folder .*: no space left on device "
                                            r"\(the earlier run there is kept\); free some space") as e:
        with staged_dir(good_run, overwrite=True) as d:
            (d / "weights.bin").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "\n" not in str(e.value) and isinstance(e.value, TextloraError)
    _assert_intact(good_run)


def test_predict_and_eval_output_into_a_missing_folder_is_one_line(tiny_models, tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(tiny_data, tiny_models["bert"], run, epochs=1), progress=False)
    (tmp_path / "in.txt").write_text("good day\nbad day\n")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", "in.txt", "--output", "missing_dir/out.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --output missing_dir/out.jsonl: folder missing_dir does not exist; create it first "
                   "or choose another --output.\n")
    assert not (tmp_path / "missing_dir").exists()
    assert main(["eval", str(run), "--data", str(tiny_data), "--output", "missing_dir/m.json"]) == 2
    assert capsys.readouterr().err == ("error: --output missing_dir/m.json: folder missing_dir does not exist; "
                                       "create it first or choose another --output.\n")
    assert main(["predict", str(run), "good day", "--output", "."]) == 2
    assert capsys.readouterr().err.startswith("error: --output . is a folder; pass a file path")


def _old_run(folder, multi_label=False):
    """A run folder as textlora wrote it before `run_folder.Run` (the files written by hand, not by textlora)."""
    import json

    import numpy as np

    folder.mkdir()
    labels = ["a", "b", "c"]
    (folder / "manifest.json").write_text(json.dumps({"textlora_version": "0.1", "method": "head", "labels": labels,
                                                      "base_model": {"name": "base/path", "path": "base/path"}}))
    (folder / "config.yaml").write_text("model:\n  method: head\n  max_length: 16\ntrain:\n  epochs: 3\n"
                                        "future_section: {x: 1}\n")
    (folder / "labels.json").write_text(json.dumps({"labels": labels, "multi_label": multi_label}))
    (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}, "best_epoch": 2}))
    if multi_label:
        (folder / "thresholds.json").write_text(json.dumps({"a": 0.25, "c": 0.75}))
    (folder / "loss_log.jsonl").write_text('{"epoch": 1, "step": 1, "loss": 1.5, "lr": 0.001}\n'
                                           '{"epoch": 1, "step": 2, "loss": 1.25, "lr": 0.0005}\n')
    np.savez_compressed(folder / "predictions.npz", validation_logits=np.ones((2, 3)), validation_labels=np.array([0, 2]),
                        test_logits=np.zeros((1, 3)), test_labels=np.array([1]))
    return folder


def test_run_open_reads_a_run_folder_of_the_old_format(tmp_path):
    import numpy as np

    from textlora.run_folder import Run

    run = Run.open(_old_run(tmp_path / "run"))  # saved artifacts are read leniently: future_section is dropped
    assert (run.method, run.config.model.max_length, run.config.train.epochs) == ("head", 16, 3)
    assert run.labels.labels == ["a", "b", "c"] and run.manifest["textlora_version"] == "0.1"
    assert run.metrics == {"test": {"accuracy": 0.5}, "best_epoch": 2} and run.thresholds is None
    assert run.base == "base/path" and run.path_of("adapter") == tmp_path / "run" / "adapter"
    logits, y = run.predictions()
    assert sorted(logits) == ["test", "validation"] and y["validation"].tolist() == [0, 2]
    assert [r["loss"] for r in run.loss_log()] == [1.5, 1.25]
    multi = Run.open(_old_run(tmp_path / "multi", multi_label=True))
    np.testing.assert_allclose(multi.thresholds, [0.25, 0.5, 0.75])  # 0.5 for a label the file lacks


def test_run_open_refuses_what_is_not_a_finished_run(tmp_path):
    from textlora.errors import ModelError
    from textlora.run_folder import Run

    with pytest.raises(ModelError, match="run folder .* not found. Pass the --out folder"):
        Run.open(tmp_path / "nothing")
    staging = _old_run(tmp_path / "staging")
    (staging / "manifest.json").unlink()
    with pytest.raises(ModelError, match="is not a finished run folder"):
        Run.open(staging)
    run = Run.open(staging, finished=False)  # what the report reads inside `train`
    assert run.manifest is None and run.method == "head" and run.predictions()[1]["test"].tolist() == [1]
    (staging / "metrics.json").unlink()
    with pytest.raises(ModelError, match="metrics.json is missing"):
        _ = run.metrics
    (staging / "labels.json").unlink()  # `textlora runs` skips such a folder instead of failing on it
    with pytest.raises(ModelError, match="staging: labels.json is missing; the run folder is incomplete"):
        Run.open(staging, finished=False)


def test_run_writers_keep_the_on_disk_format(tmp_path):
    import json

    import numpy as np

    from textlora.run_folder import write_loss_log, write_manifest, write_predictions

    history = [{"epoch": 1, "steps": [(1, 1.5, 0.001), (2, 1.25, 0.0005)]}, {"epoch": 2, "steps": [(3, 1.0, 0.0)]}]
    write_loss_log(tmp_path, history)
    assert history == [{"epoch": 1}, {"epoch": 2}]  # the steps moved to the log
    assert (tmp_path / "loss_log.jsonl").read_text() == (
        '{"epoch": 1, "step": 1, "loss": 1.5, "lr": 0.001}\n{"epoch": 1, "step": 2, "loss": 1.25, "lr": 0.0005}\n'
        '{"epoch": 2, "step": 3, "loss": 1.0, "lr": 0.0}\n')
    write_predictions(tmp_path, {"validation": np.ones((2, 3)), "test": np.zeros((1, 3))},
                      {"validation": np.array([0, 2]), "test": np.array([1])})
    with np.load(tmp_path / "predictions.npz") as z:
        assert list(z) == ["validation_logits", "validation_labels", "test_logits", "test_labels"]
        assert z["validation_labels"].tolist() == [0, 2]
    write_manifest(tmp_path, {"textlora_version": "0.1", "shape": np.zeros(2)})
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"textlora_version": "0.1", "shape": [0.0, 0.0]}
    assert is_complete(tmp_path)


def test_out_in_a_folder_without_write_permission_is_one_line(tiny_data, tmp_path, monkeypatch):
    from textlora.run_folder import check_writable

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))  # root can write
    with pytest.raises(ConfigError, match=r"cannot write in .*locked \(permission denied\)") as e:
        check_writable(locked / "run", overwrite=False, data=tiny_data)
    assert "\n" not in str(e.value)


def test_export_into_a_file_or_full_folder_fails_before_loading(tmp_path):
    from textlora.errors import ModelError
    from textlora.predict import export_merged

    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    for out in (tmp_path / "a-file", tmp_path / "full"):  # the run does not exist: the --out check comes first
        with pytest.raises(ModelError, match="exists and is not an empty folder"):
            export_merged(tmp_path / "no-such-run", out)
    assert (tmp_path / "a-file").read_text() == "mine" and (tmp_path / "full" / "x").read_text() == "mine"
