"""Faults in run folders: a malformed run.json, damaged parameters or checkpoints, a full disk and
two processes in one run folder end in one line (exit 2) or in the right numbers, never in a
traceback or in wrong numbers given in silence.

The fuzz tests draw new cases every run; the cases are counted and printed at the end of the test
run (docs/guarantees.md quotes them).
"""

from __future__ import annotations

import copy
import errno
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgsm_repro import runs
from fgsm_repro.config import TrainConfig
from fgsm_repro.errors import ReproError
from fgsm_repro.files import ORBAX_TEMP
from fgsm_repro.locks import lock_path
from fgsm_repro.models import build_model
from fgsm_repro.orbax_noise import orbax_leftover
from tests.helpers import count_case, fit_one, key_paths, run_cli, toy_task

# t1_softmax on 3,000 training images, 4 epochs, a checkpoint after each (orbax keeps the last two):
# a few seconds to train, and a checkpoint before the last to fall back to.
TINY = """inherit: {base}
profiles:
  ci:
    data: {{validation_size: 1000, train_per_class: 300, test_per_class: 50}}
    train: {{epochs: 4, checkpoint_every: 1, early_stopping_patience: null}}
    trainings:
      model: {{grid: {{weight_decay: [0.0]}}}}
      sensitivity: {{grid: {{weight_decay: [0.0]}}, measure_epochs: [1]}}
"""
LIMIT = "200"  # test images attacked
RECORD_NUMBERS = ("epochs_run", "best_epoch", "val_error", "test_error", "training_hash", "config_hash")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------
# one tiny trained run, copied for each case
# --------------------------------------------------------------------------------------

class Trained:
    def __init__(self, config: Path, run_dir: Path, data_dir: Path, numbers: dict):
        self.config, self.run_dir, self.data_dir, self.numbers = config, run_dir, data_dir, numbers
        self.record = json.loads((run_dir / "run.json").read_text())
        self.checksum = (run_dir / "final" / runs.CHECKSUM).read_text()

    def copy(self, parent: Path) -> Path:
        target = Path(tempfile.mkdtemp(dir=parent)) / "run"
        shutil.copytree(self.run_dir, target)
        return target

    def train(self, run_dir: Path, *extra: str) -> tuple[int, str, str]:
        return run_cli(["train", str(self.config), "--profile", "ci", "--run-dir", str(run_dir), "--data-dir",
                        str(self.data_dir), "-q", *extra])

    def attack(self, run_dir: Path) -> tuple[int, dict | None, str]:
        """`attack` on `run_dir`: (exit code, its numbers or None, stderr)."""
        out = run_dir.parent / "attack.json"
        out.unlink(missing_ok=True)
        code, _, err = run_cli(["attack", str(run_dir), "--limit", LIMIT, "--out", str(out), "--data-dir",
                                str(self.data_dir)])
        return code, _numbers(out) if code == 0 else None, err


def _numbers(out: Path) -> dict:
    record = json.loads(out.read_text())
    adversarial = {k: v for k, v in record["adversarial"].items() if k != "seconds_per_example"}
    return {"clean": record["clean"], "adversarial": adversarial}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_data_dir) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    config = root / "tiny_softmax.yaml"
    config.write_text(TINY.format(base=REPO / "configs" / "t1_softmax.yaml"))
    run_dir = root / "run"
    code, _, err = run_cli(["train", str(config), "--profile", "ci", "--run-dir", str(run_dir), "--data-dir",
                            str(mnist_data_dir), "-q"])
    assert code == 0, err
    assert _steps(run_dir / "checkpoints") == [3, 4]
    out = root / "attack.json"
    code, _, err = run_cli(["attack", str(run_dir), "--limit", LIMIT, "--out", str(out), "--data-dir",
                            str(mnist_data_dir)])
    assert code == 0, err
    return Trained(config, run_dir, mnist_data_dir, _numbers(out))


def _steps(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _one_error_line(err: str) -> bool:
    """stderr is one ``error:`` line (after warnings, if any), and no traceback."""
    lines = err.strip().splitlines()
    return ("Traceback" not in err and bool(lines) and lines[-1].startswith("error: ")
            and all(line.startswith("warning: ") for line in lines[:-1]))


def _debris(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if ORBAX_TEMP in p.name or p.name.endswith((".partial", ".tmp")))


def _same_training(trained: Trained, run_dir: Path) -> list[str]:
    """How `run_dir`'s result differs from the uninterrupted run's (bitwise parameters, record)."""
    record = json.loads((run_dir / "run.json").read_text())
    problems = [f"run.json {k}: {record.get(k)!r} != {trained.record.get(k)!r}"
                for k in RECORD_NUMBERS if record.get(k) != trained.record.get(k)]
    if (run_dir / "final" / runs.CHECKSUM).read_text() != trained.checksum:
        problems.append("final/ holds other parameters")
    return problems


# --------------------------------------------------------------------------------------
# 1. run.json: read and checked before anything is loaded
# --------------------------------------------------------------------------------------

BAD_RECORDS = {
    "a list": "[]", "null": "null", "a number": "5", "a string": '"run"', "config a number": '{"config": 5}',
    "cut off": None, "not UTF-8": b"\xff\xfe{", "empty": "",
}
BAD_FIELDS = {
    "profile missing": ("profile", ...), "training_hash missing": ("training_hash", ...),
    "config null": ("config", None), "seed a string": ("seed", "0"), "seed true": ("seed", True),
    "seed a float": ("seed", 0.5), "point a list": ("point", [0.0]),
    "point of a wrong value": ("point", {"weight_decay": "x"}),
    "point of an unknown key": ("point", {"nosuch": 1}), "training a number": ("training", 5),
    "training unknown": ("training", "nosuch"), "resolved_config a list": ("resolved_config", []),
    "config_from_run_dir a number": ("config_from_run_dir", 3), "config_hash a dict": ("config_hash", {}),
    "profile unknown": ("profile", "paperish"), "profile a list": ("profile", ["ci"]),
}


def _bad_record(trained: Trained, case: str) -> bytes:
    text = (trained.run_dir / "run.json").read_text()
    if case in BAD_RECORDS:
        value = BAD_RECORDS[case]
        if value is None:
            return text[: len(text) // 2].encode()
        return value if isinstance(value, bytes) else value.encode()
    key, value = BAD_FIELDS[case]
    record = copy.deepcopy(trained.record)
    if value is ...:
        del record[key]
    else:
        record[key] = value
    return json.dumps(record).encode()


@pytest.mark.mnist
@pytest.mark.parametrize("case", [*BAD_RECORDS, *BAD_FIELDS])
def test_a_malformed_run_record_is_one_line_naming_the_file(trained, tmp_path, case):
    run_dir = trained.copy(tmp_path)
    (run_dir / "run.json").write_bytes(_bad_record(trained, case))
    with pytest.raises(ReproError) as err:
        runs.read_run(run_dir)
    assert "\n" not in str(err.value)
    assert str(run_dir / "run.json") in str(err.value) or "changed since" in str(err.value), str(err.value)
    code, numbers, stderr = trained.attack(run_dir)
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr


@pytest.mark.mnist
def test_read_run_checks_the_record_without_loading_data_or_parameters(trained, monkeypatch):
    def no(*_, **__):
        raise AssertionError("read_run must not load data or parameters")

    monkeypatch.setattr(runs, "make_splits", no)
    monkeypatch.setattr(runs.ocp, "StandardCheckpointer", no)
    info = runs.read_run(trained.run_dir)
    assert (info.run_dir, info.training, info.record) == (trained.run_dir, "model", trained.record)
    assert info.cfg.training_hash(info.training, info.record["point"]) == trained.record["training_hash"]


# --------------------------------------------------------------------------------------
# 2. checksums: damaged parameters are refused, never used
# --------------------------------------------------------------------------------------

def _resave_final(run_dir: Path, change) -> None:
    """final/ holding changed parameters, well-formed for orbax, with its checksum file as it was."""
    import orbax.checkpoint as ocp

    final = (run_dir / "final").resolve()
    checksum = (final / runs.CHECKSUM).read_text()
    with ocp.StandardCheckpointer() as ckptr:
        params = jax.tree.map(np.array, ckptr.restore(final))
    shutil.rmtree(final)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(final, change(params))
    (final / runs.CHECKSUM).write_text(checksum)


@pytest.mark.mnist
def test_damaged_final_parameters_are_refused_not_used(trained, tmp_path):
    """The trial's case: values of 1e25 in the kernel, well-formed for orbax."""
    run_dir = trained.copy(tmp_path)

    def huge(params):
        params["Dense_0"]["kernel"][3, :4] = 4.9e25
        return params

    _resave_final(run_dir, huge)
    code, numbers, err = trained.attack(run_dir)
    assert code == 2 and err.count("\n") == 1 and "damaged" in err and str(run_dir) in err and "--fresh" in err, err
    with pytest.raises(ReproError, match="do not match the checksum"):
        runs.load_run(run_dir, data_dir=trained.data_dir)


@pytest.mark.mnist
def test_runs_saved_without_checksums_still_load_and_resume(trained, tmp_path):
    run_dir = trained.copy(tmp_path)
    (run_dir / "final" / runs.CHECKSUM).unlink()
    for step in _steps(run_dir / "checkpoints"):  # checkpoints as they were saved before checksums
        meta = run_dir / "checkpoints" / str(step) / "meta" / "metadata"
        record = json.loads(meta.read_text())
        del record["sha256"]
        meta.write_text(json.dumps(record))
    code, numbers, err = trained.attack(run_dir)
    assert code == 0 and numbers == trained.numbers, err
    code, _, err = trained.train(run_dir)
    assert code == 0 and not _same_training(trained, run_dir), err


# --------------------------------------------------------------------------------------
# 2 and 3. a damaged checkpoint: the one before is resumed, or one line
# --------------------------------------------------------------------------------------

def _toy_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 50, "checkpoint_every": 1,
                          "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.5}, **kw})


def _toy_fit(directory: Path, seed: int = 0, on_epoch=None):
    model, objective = build_model("softmax_regression", {"num_classes": 2})
    return fit_one(model, objective, _toy_cfg(), *toy_task(), seed=seed, checkpoint_dir=directory, config_hash="h",
                   on_epoch=on_epoch)


def _truncate_all(folder: Path) -> None:
    for path in folder.iterdir():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


DAMAGE = {
    # well-formed for orbax, but not what the bookkeeping's checksum says: another seed's arrays
    "arrays of another run": lambda step, other: (shutil.rmtree(step / "state"),
                                                  shutil.copytree(other / step.name / "state", step / "state")),
    "bookkeeping edited": lambda step, _: (step / "meta" / "metadata").write_text(
        (step / "meta" / "metadata").read_text().replace('"epoch": 3', '"epoch": 2')),
    "bookkeeping cut off": lambda step, _: (step / "meta" / "metadata").write_text(
        (step / "meta" / "metadata").read_text()[:40]),
    "arrays truncated (OCDBT OUT_OF_RANGE)": lambda step, _: _truncate_all(step / "state" / "d"),
    "step folder emptied": lambda step, _: [shutil.rmtree(p) if p.is_dir() else p.unlink() for p in step.iterdir()],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_removed_and_the_one_before_resumed_to_the_same_parameters(tmp_path, capsys,
                                                                                          damage):
    whole = _toy_fit(tmp_path / "whole")
    _toy_fit(tmp_path / "other", seed=1)
    assert _steps(tmp_path / "whole") == [2, 3]
    DAMAGE[damage](tmp_path / "whole" / "3", tmp_path / "other")
    capsys.readouterr()
    epochs = []
    resumed = _toy_fit(tmp_path / "whole", on_epoch=lambda record, _: epochs.append(record["epoch"]))
    assert epochs == [3]  # from the checkpoint before the damaged one
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    warning = capsys.readouterr().err
    assert f"warning: {tmp_path / 'whole'}: checkpoint 3 cannot be restored" in warning
    assert "resuming from checkpoint 2" in warning and warning.count("\n") == 1, warning
    assert _steps(tmp_path / "whole") == [2, 3]  # written again


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_no_intact_checkpoint_is_a_one_line_error_and_removes_nothing(tmp_path, damage):
    _toy_fit(tmp_path / "run")
    _toy_fit(tmp_path / "other", seed=1)
    shutil.rmtree(tmp_path / "run" / "2")
    DAMAGE[damage](tmp_path / "run" / "3", tmp_path / "other")
    with pytest.raises(ReproError, match="cannot restore its checkpoints") as err:
        _toy_fit(tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "run") in message and "--fresh" in message, message
    assert _steps(tmp_path / "run") == [3]


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.parametrize("command", ["train", "attack"])
def test_damaged_files_on_the_command_line_are_one_line_without_tracebacks(trained, tmp_path, command):
    """In a process of its own, as a user runs it: orbax's log lines and tensorstore's reports to a
    closed event loop (after a failed restore) must not come before the error line."""
    run_dir = trained.copy(tmp_path)
    if command == "train":  # the only checkpoint truncated: OUT_OF_RANGE in OCDBT, no checkpoint to fall back to
        shutil.rmtree(run_dir / "checkpoints" / "3")
        _truncate_all(run_dir / "checkpoints" / "4" / "state" / "d")
        argv = ["train", str(trained.config), "--profile", "ci", "--run-dir", str(run_dir), "-q"]
    else:
        _truncate_all(run_dir / "final" / "d")
        argv = ["attack", str(run_dir), "--limit", LIMIT]
    result = subprocess.run([sys.executable, "-m", "fgsm_repro.cli", *argv, "--data-dir", str(trained.data_dir)],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(run_dir) in lines[0], result.stderr


@pytest.mark.mnist
def test_stale_orbax_temporaries_are_removed_before_resuming(trained, tmp_path):
    run_dir = trained.copy(tmp_path)
    for stale in (run_dir / "checkpoints" / f"5{ORBAX_TEMP}-1700000000" / "state",
                  run_dir / f"final.partial{ORBAX_TEMP}-1700000000", run_dir / "final.partial" / "d"):
        stale.mkdir(parents=True)
        (stale / "x").write_text("left by a killed or refused write")
    code, _, err = trained.train(run_dir)
    assert code == 0 and not _debris(run_dir) and not _same_training(trained, run_dir), err


# --------------------------------------------------------------------------------------
# 4. a full disk
# --------------------------------------------------------------------------------------

def _full_disk(monkeypatch, where: str) -> None:
    """ENOSPC as orbax meets it: tensorstore's RESOURCE_EXHAUSTED while a checkpoint's arrays are
    written, or an OSError from its metadata writes while final/ is written."""
    from etils.epath import abstract_path
    from orbax.checkpoint._src.serialization import type_handlers

    if where == "checkpoint":
        async def refused(self, value, tspec, ts_context):
            raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "state.params/0" in OCDBT database at local file '
                             f'"{tspec}": Failed to write 91469 bytes to file 11: No space left on device '
                             "[os_error_code='28']")

        monkeypatch.setattr(type_handlers.NumpyHandler, "_open_and_write", refused)
    else:
        write_text = abstract_path.Path.write_text

        def refused_text(self, *args, **kwargs):
            if "final.partial" in str(self):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write_text(self, *args, **kwargs)

        monkeypatch.setattr(abstract_path.Path, "write_text", refused_text)


@pytest.mark.mnist
@pytest.mark.parametrize("where", ["checkpoint", "final"])
def test_a_full_disk_is_one_line_leaves_no_orbax_temporaries_and_resumes(trained, tmp_path, monkeypatch, where):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _full_disk(patch, where)
        code, _, err = trained.train(run_dir)
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert ("a checkpoint in" if where == "checkpoint" else "the trained parameters") in err, err
    assert not _debris(run_dir), _debris(run_dir)
    code, _, err = trained.train(run_dir)  # space freed: the same command resumes
    assert code == 0 and not _same_training(trained, run_dir), err


@pytest.mark.mnist
def test_a_full_disk_during_reproduce_is_one_line_and_leaves_no_orbax_temporaries(trained, tmp_path, monkeypatch):
    _full_disk(monkeypatch, "checkpoint")
    code, _, err = run_cli(["reproduce", "T1.softmax", "--profile", "ci", "--runs-dir", str(tmp_path / "runs"),
                            "--results-dir", str(tmp_path / "results"), "--data-dir", str(trained.data_dir), "-q"])
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert not _debris(tmp_path), _debris(tmp_path)


MOUNT_DRIVER = """
import json, subprocess, sys
mount, data, config, report = sys.argv[1:5]
cli = [sys.executable, "-m", "fgsm_repro.cli"]
out = []

def run(argv):
    p = subprocess.run(cli + argv + ["--data-dir", data, "-q"], capture_output=True, text=True)
    found = subprocess.run(["find", mount], capture_output=True, text=True).stdout.split()
    return {"code": p.returncode, "stderr": p.stderr, "files": found}

for size, command in (("40k", "train"), ("200k", "train"), ("100k", "reproduce")):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount], check=True)
    if command == "train":
        argv = ["train", config, "--profile", "ci", "--run-dir", mount + "/run"]
    else:
        argv = ["reproduce", "T1.softmax", "--profile", "ci", "--runs-dir", mount + "/runs", "--results-dir",
                mount + "/results"]
    case = {"size": size, "command": command, "full": run(argv)}
    subprocess.run(["mount", "-o", "remount,size=16m", mount], check=True)
    if command == "train":
        case["freed"] = run(argv)
        case["checksum"] = open(mount + "/run/final/params.sha256").read() if case["freed"]["code"] == 0 else None
    out.append(case)
    subprocess.run(["umount", mount], check=True)
json.dump(out, open(report, "w"))
"""


def _private_mounts() -> bool:
    """Whether this machine lets the tests mount a tmpfs in a mount namespace of their own."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = tempfile.mkdtemp()
    try:
        return subprocess.run(["unshare", "--mount", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
                              capture_output=True).returncode == 0
    finally:
        os.rmdir(probe)


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.skipif(not _private_mounts(), reason="needs root and `unshare --mount` to mount a small tmpfs")
def test_a_really_full_disk_is_one_line_leaves_no_orbax_temporaries_and_resumes(trained, tmp_path):
    """A real full file system (a tmpfs of 40k, 200k, 100k in a private mount namespace): the
    checkpoint's, final/'s and an experiment's writes refused by the disk."""
    mount, report = tmp_path / "mnt", tmp_path / "report.json"
    mount.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(MOUNT_DRIVER)
    subprocess.run(["unshare", "--mount", sys.executable, str(driver), str(mount), str(trained.data_dir),
                    str(trained.config), str(report)], cwd=REPO, check=True, timeout=600,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"})
    for case in json.loads(report.read_text()):
        full = case["full"]
        what = f"{case['command']} on a {case['size']} disk"
        assert full["code"] == 2, f"{what}: {full['stderr']}"
        lines = full["stderr"].strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], f"{what}: {full['stderr']}"
        assert not [f for f in full["files"] if ORBAX_TEMP in f or f.endswith((".partial", ".tmp"))], what
        if case["command"] == "train":
            assert case["freed"]["code"] == 0 and case["checksum"] == trained.checksum, case["freed"]["stderr"]


# --------------------------------------------------------------------------------------
# 5. one process per run folder
# --------------------------------------------------------------------------------------

HOLDER = ("import sys, time; from fgsm_repro.locks import lock_folder; lock_folder(sys.argv[1], wait=False); "
          "print('held', flush=True); time.sleep(600)")


def _hold(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lock until killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.mnist
def test_a_second_train_into_a_busy_run_folder_is_refused_in_one_line_until_the_first_ends(trained, tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold(run_dir)
    try:
        code, _, err = trained.train(run_dir)
        assert code == 2 and err == (f"error: run folder {run_dir} is in use by another fgsm-repro process (pid "
                                     f"{holder.pid} on {socket.gethostname()}); wait for it or use another "
                                     "--run-dir\n"), err
        assert not run_dir.exists()
    finally:
        holder.kill()  # SIGKILL: the operating system drops its lock
        holder.wait()
    code, _, err = trained.train(run_dir)
    assert code == 0 and not _same_training(trained, run_dir), err
    assert lock_path(run_dir).parent == run_dir.parent  # beside the run folder: --fresh removes the folder whole


def test_a_training_waits_for_the_process_in_its_checkpoint_folder(tmp_path, capsys):
    """An experiment's training (`reproduce`) waits its turn, then resumes what the other wrote."""
    folder = tmp_path / "seed0"
    holder = _hold(folder)
    threading.Timer(1.5, holder.kill).start()
    start = time.monotonic()
    _toy_fit(folder)
    holder.wait()
    assert time.monotonic() - start >= 1.4
    assert (f"waiting: run folder {folder} is in use by another fgsm-repro process (pid {holder.pid} on "
            f"{socket.gethostname()}); continuing when it is done") in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.mnist
def test_concurrent_reproductions_of_one_experiment_wait_and_all_finish(trained, tmp_path):
    """The trial's case: three `reproduce T1.softmax --profile ci` at once in one clone."""
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", "FGSM_REPRO_JAX_CACHE": "off"}
    logs = [tmp_path / f"{i}.log" for i in range(3)]
    procs = []
    for log in logs:
        with open(log, "w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fgsm_repro.cli", "reproduce", "T1.softmax", "--profile", "ci", "--runs-dir",
                 str(runs_dir), "--results-dir", str(results), "--data-dir", str(trained.data_dir), "-q"],
                stdout=subprocess.DEVNULL, stderr=out, cwd=REPO, env=env))
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    errs = [log.read_text() for log in logs]
    assert codes == [0, 0, 0], errs
    for err in errs:
        assert all(line.startswith("waiting: run folder ") for line in err.strip().splitlines()), err
    assert json.loads((results / "t1_softmax.ci.json").read_text())["measured"]
    (run_dir,) = [p for p in (runs_dir / "t1_softmax.ci").iterdir() if p.is_dir()]
    assert runs.load_run(run_dir, data_dir=trained.data_dir).params  # complete, and its checksum holds
    assert not _debris(runs_dir) and not _debris(results)


# --------------------------------------------------------------------------------------
# 6. fuzzing run.json, final/ and checkpoints/
# --------------------------------------------------------------------------------------

ODD_VALUES = st.one_of(
    st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=8), st.sampled_from(["ci", "paper", "model", "sensitivity", ".", "/", "configs/t1_softmax.yaml"]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@st.composite
def mutated_records(draw, record: dict) -> bytes:
    kind = draw(st.sampled_from(["fields", "fields", "fields", "top-level keys", "cut off", "random bytes",
                                 "another JSON value"]))
    text = json.dumps(record, indent=2)
    if kind == "cut off":
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    if kind == "random bytes":
        return draw(st.binary(max_size=200))
    if kind == "another JSON value":
        return json.dumps(draw(st.one_of(ODD_VALUES, st.lists(ODD_VALUES, max_size=3)))).encode()
    tree = copy.deepcopy(record)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in key_paths(tree) if len(p) == 1] if kind == "top-level keys" else list(key_paths(tree))
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        node = tree
        for p in parents:
            node = node[p]
        if draw(st.booleans()):
            del node[last]
        else:
            node[last] = draw(ODD_VALUES)
    return json.dumps(tree).encode()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@st.composite
def damaged_bytes(draw, files: list[Path]) -> tuple[Path, str, list[tuple[int, int]] | int]:
    """A file, and either flips (offset fraction in 1/1000, xor mask) of 1 to 16 of its bytes, or
    its truncation to a fraction of its size."""
    path = draw(st.sampled_from(files))
    if draw(st.booleans()):
        return path, "flip", draw(st.lists(st.tuples(st.integers(0, 999), st.integers(1, 255)), min_size=1,
                                           max_size=16))
    return path, "truncate", draw(st.integers(0, 999))


def _damage(path: Path, how: str, what) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) * what // 1000:]
    else:
        for fraction, mask in what:
            if data:
                data[len(data) * fraction // 1000] ^= mask
    path.write_bytes(bytes(data))


@pytest.fixture
def leaks(monkeypatch) -> list[str]:
    """What would reach the terminal as "Exception ignored in …" (the CLI drops orbax's leftovers
    of a failed restore, as pytest's own hook does not)."""
    found = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: None if orbax_leftover(u) else found.append(
        f"{u.exc_type.__name__}: {u.exc_value} ({u.object!r})"))
    return found


def _no_leaks(leaks: list[str]) -> None:
    gc.collect()  # abandoned coroutines raise as they are collected
    assert not leaks, leaks


def _check_attack(trained: Trained, run_dir: Path, case: str, leaks: list[str]) -> None:
    code, numbers, err = trained.attack(run_dir)
    if code != 0:  # a failed restore
        _no_leaks(leaks)
    assert code in (0, 2), (case, err)
    if code == 0:
        assert numbers == trained.numbers, f"{case}: other numbers, given in silence"
        count_case(f"{case}: the right numbers")
    else:
        assert _one_error_line(err) and err.count("\n") == 1, (case, err)
        count_case(f"{case}: refused in one line")


@pytest.mark.slow
@pytest.mark.mnist
def test_fuzzed_run_records_give_the_right_numbers_or_one_line(trained, tmp_path, leaks):
    @settings(FUZZ, max_examples=30)
    @given(data=mutated_records(trained.record))
    def case(data):
        run_dir = trained.copy(tmp_path)
        (run_dir / "run.json").write_bytes(data)
        count_case("run folders: run.json fuzzed")
        _check_attack(trained, run_dir, "run folders: run.json fuzzed", leaks)

    case()


@pytest.mark.slow
@pytest.mark.mnist
def test_fuzzed_final_parameters_give_the_right_numbers_or_one_line(trained, tmp_path, leaks):
    @settings(FUZZ, max_examples=24)
    @given(damage=damaged_bytes(_files(trained.run_dir / "final")))
    def case(damage):
        path, how, what = damage
        run_dir = trained.copy(tmp_path)
        _damage(run_dir / path.relative_to(trained.run_dir), how, what)
        count_case("run folders: final/ bytes damaged")
        _check_attack(trained, run_dir, "run folders: final/ bytes damaged", leaks)

    case()


@pytest.mark.slow
@pytest.mark.mnist
def test_fuzzed_checkpoints_resume_to_the_same_parameters_or_one_line(trained, tmp_path, leaks):
    """Both checkpoints kept (a damaged one falls back to the other), or only the last (no fallback)."""
    @settings(FUZZ, max_examples=12)
    @given(only_last=st.booleans(), damage=damaged_bytes(_files(trained.run_dir / "checkpoints")))
    def case(only_last, damage):
        path, how, what = damage
        run_dir = trained.copy(tmp_path)
        if only_last:
            shutil.rmtree(run_dir / "checkpoints" / "3")
        if (target := run_dir / path.relative_to(trained.run_dir)).exists():
            _damage(target, how, what)
        count_case("run folders: checkpoint bytes damaged, then resumed")
        code, _, err = trained.train(run_dir)
        _no_leaks(leaks)
        assert code in (0, 2), err
        if code == 0:
            assert not _same_training(trained, run_dir), (path, _same_training(trained, run_dir))
            count_case("run folders: checkpoint bytes damaged: resumed to bitwise the same parameters")
        else:
            assert _one_error_line(err) and "--fresh" in err, err
            count_case("run folders: checkpoint bytes damaged: refused in one line")

    case()
