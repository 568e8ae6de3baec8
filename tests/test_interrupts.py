"""Ctrl-C on the `fgsm-repro` executable: from its first instant, inside a long XLA computation,
and after the work is done, it ends at once with a message saying what is kept, exit 130, never
a traceback (fgsm_repro/interrupts.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from fgsm_repro import interrupts

EXE = Path(sys.executable).with_name("fgsm-repro")
T1 = REPO / "configs" / "t1_softmax.yaml"

pytestmark = pytest.mark.slow


def _interrupt_after(argv: list[str], ready, *, env=None, cwd=None, timeout: float = 300):
    """Start the executable, wait until `ready()` (or a delay in seconds), send SIGINT; returns
    (exit status, stderr, seconds from the signal to the exit)."""
    proc = subprocess.Popen([str(EXE), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    if callable(ready):
        deadline = time.time() + timeout
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(ready)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, time.perf_counter() - sent


# Imported only after the watcher started: a traceback through one of them is a failure.
LATER = ("fgsm_repro/cli.py", "/typer/", "/click/", "/rich/", "/jax/", "/flax/")


def test_ctrl_c_in_the_first_instants_is_never_a_traceback_of_the_project():
    """From 0 to 100 ms after the start. Before the watcher starts — the interpreter's own start-up
    (importing `site`) and the launcher's import of the two small modules that start it, a
    millisecond or two — a SIGINT is Python's: it kills the process (-2) or ends it with a
    traceback through those imports. After, never a traceback."""
    for i in range(21):
        status, err, _ = _interrupt_after(["report", "--list"], i * 0.005, timeout=60)
        if status == -signal.SIGINT or ("Traceback" in err and not any(m in err for m in LATER)):
            continue  # before the watcher started
        assert status in (0, 130) and "Traceback" not in err, (i * 0.005, status, err)
        if status == 130:
            assert err.strip().splitlines()[-1] == interrupts.NOTHING_HALF_WRITTEN


@pytest.mark.mnist
def test_ctrl_c_inside_a_long_attack_ends_at_once_and_promises_no_resume(tmp_path, mnist_data_dir):
    env = dict(os.environ, TFDS_DATA_DIR=str(mnist_data_dir))
    run = tmp_path / "run"
    trained = subprocess.run([str(EXE), "train", str(T1), "--profile", "ci", "--run-dir", str(run), "-q"], env=env,
                             capture_output=True, text=True, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    # C&W with many steps: one jitted loop per batch that runs for seconds without returning to Python.
    status, err, took = _interrupt_after(["attack", str(run), "--attack", "cw", "--param", "steps=20000"], 8.0,
                                         env=env, cwd=tmp_path)
    assert status == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == interrupts.NOTHING_HALF_WRITTEN
    assert took < 3.0, f"took {took:.1f} s to stop"


@pytest.mark.mnist
def test_ctrl_c_after_reproduce_wrote_its_results_says_so(tmp_path, mnist_data_dir):
    env = dict(os.environ, TFDS_DATA_DIR=str(mnist_data_dir), FGSM_REPRO_WORKDIR=str(REPO))  # run from tmp_path
    report = tmp_path / "results" / "REPORT.md"
    status, err, _ = _interrupt_after(["reproduce", "T1.softmax", "--profile", "ci", "--results-dir",
                                       str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"), "-q"],
                                      report.is_file, env=env, cwd=tmp_path)
    assert "Traceback" not in err and status in (0, 130), (status, err)
    if status == 130:  # the signal came before the process ended
        assert err.strip().splitlines()[-1].startswith(("interrupted after the results", "interrupted: checkpoints"))


@pytest.mark.mnist
def test_ctrl_c_during_training_says_how_to_resume(tmp_path, mnist_data_dir):
    env = dict(os.environ, TFDS_DATA_DIR=str(mnist_data_dir))
    run = tmp_path / "run"
    status, err, took = _interrupt_after(["train", str(REPO / "configs" / "t2_maxout240.yaml"), "--profile", "ci",
                                          "--run-dir", str(run), "-q"],
                                         lambda: any(run.glob("checkpoints/*")), env=env, cwd=tmp_path)
    assert status == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == interrupts.RESUME_HINT
    assert took < 3.0
